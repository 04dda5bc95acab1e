"""`xenlab board new`: a board's profile from its DTB and U-Boot binary.

The profile goes to boards/NAME.yaml (or --out), never over an existing one
without --force; `--farm-target` also prints the labgrid target to paste.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import XenlabError
from ..plan import boardnew, boardsources
from ..plan.dtb import DtbInfo
from ..plan.prepare import prepare
from ..plan.profile import boards_dir, display_path


def cmd_board_new(args) -> int:
    if bool(args.dtb) == bool(args.debian_dtb):
        raise XenlabError("give the board's DTB: --dtb FILE or --debian-dtb PACKAGE[=VERSION]:PATH")
    if args.uboot and args.debian_uboot:
        raise XenlabError("--uboot and --debian-uboot: give one")
    if not boardnew.NAME_RE.match(args.name):
        raise XenlabError(f"board name {args.name!r} must match {boardnew.NAME_RE.pattern} "
                          "(it names boards/NAME.yaml)")
    out = Path(args.out) if args.out else boards_dir() / f"{args.name}.yaml"
    if out.exists() and not args.force:  # before anything is downloaded
        raise XenlabError(f"{display_path(out)} exists: give --force to replace it")
    dtb = boardsources.file_input(args.dtb, "--dtb") if args.dtb else \
        boardsources.debian_input(args.debian_dtb, "--debian-dtb",
                              boardsources.dtb_deb_arch(args.debian_dtb, args.arch))
    if args.debian_uboot:  # its Debian architecture is the board's: read the DTB first
        arch = boardnew.arch_of(DtbInfo.load(dtb.path, f"--dtb {dtb.shown}"), None, args.arch).value
        uboot = boardsources.debian_input(args.debian_uboot, "--debian-uboot",
                                      "arm64" if arch == "arm64" else "armhf")
    else:
        uboot = boardsources.file_input(args.uboot, "--uboot") if args.uboot else None
    facts = boardnew.BoardFacts.read(args.name, dtb, uboot, args.arch, args.ram, args.load_command)
    text = boardnew.fitted(facts, lambda path: prepare(str(path)))
    boardnew.write(out, text, args.force)
    print(f"board {args.name} ({facts.arch.value}): {display_path(out)}, Dom0 {facts.dom0_mb} MiB; "
          f"check it with `xenlab doctor {display_path(out) if args.out else args.name}`")
    if args.farm_target:
        print(farm_target(facts, args.name if not args.out else display_path(out)), end="")
    return 0


def farm_target(f: boardnew.BoardFacts, profile: str) -> str:
    """The labgrid target for the board, in farm-examples.yaml's shape, EDIT marking each
    placeholder."""
    prompt = f.binary.prompt if f.binary else "=> "
    auto = (f.binary.autoboot if f.binary else None) or "Hit any key to stop autoboot:"
    tftp = f.load_command.value.startswith("tftp")
    lines = ["targets:", f"  {f.name}:", "    options:", f"      xenlab_board: {profile}",
             "    features: [pv-block, network]", "    resources:",
             "      USBSerialPort:", "        match:",
             '          ID_SERIAL_SHORT: "EDIT"              # `udevadm info /dev/ttyUSB0`',
             f"        speed: {int(re.match(r'[0-9]*', f.info.stdout_options()).group() or 115200)}",
             "      NetworkPowerPort:", "        model: EDIT                         # your PDU's "
             "labgrid model, e.g. gude8031", '        host: "EDIT"', "        index: 0"
             "                            # EDIT: the outlet"]
    if tftp:
        lines += ["      TFTPProvider:", f'        internal: "/srv/tftp/{f.name}/"   # EDIT: the '
                  "lab's TFTP root", f'        external: "{f.name}/"']
    lines += ["    drivers:", "      SerialDriver: {}", "      NetworkPowerDriver:", "        delay: 3.0",
              "      UBootDriver:", f"        prompt: {boardnew.yaml_scalar(prompt)}", f"        autoboot: {boardnew.yaml_scalar(auto)}",
              "      XenShellDriver: {}"]
    if tftp:
        lines += ["      TFTPProviderDriver: {}", "      XenStrategy:",
                  '        tftp_server: "EDIT"                # the TFTP server\'s address as the board sees it']
    else:
        lines += ["      XenStrategy: {}"]
    return "\n".join(lines) + "\n"


def add_parser(sub, text) -> None:
    bo = sub.add_parser("board", help="board profiles").add_subparsers(dest="board_cmd", required=True)
    new = bo.add_parser("new", help="write a board's profile from its DTB and U-Boot binary, "
                                    "each value with where it came from")
    new.add_argument("name", type=text, help="the board's name: boards/NAME.yaml")
    new.add_argument("--dtb", metavar="FILE", help="the board's DTB")
    new.add_argument("--debian-dtb", metavar="PACKAGE[=VERSION]:PATH",
                     help="the DTB inside a Debian kernel package, pinned by version and sha256")
    new.add_argument("--uboot", metavar="FILE", help="the board's U-Boot binary (u-boot.bin, "
                     "u-boot-sunxi-with-spl.bin): its environment, prompt, PSCI")
    new.add_argument("--debian-uboot", metavar="PACKAGE[=VERSION]:PATH",
                     help="the U-Boot build inside a Debian u-boot-* package, pinned")
    new.add_argument("--arch", choices=["arm32", "arm64"], help="(default: from U-Boot's cpu= or the DTB's cores)")
    new.add_argument("--ram", metavar="SIZE[@START]", help="the board's RAM (512M@0x40000000) when "
                     "the DTB leaves /memory to the firmware")
    new.add_argument("--load-command", metavar="CMD", help="how U-Boot loads files (default: tftpb; "
                     "'fatload mmc 0:1' for the SD card)")
    new.add_argument("--out", metavar="FILE", help="write here instead of boards/NAME.yaml")
    new.add_argument("--force", action="store_true", help="replace an existing profile")
    new.add_argument("--farm-target", action="store_true",
                     help="also print the labgrid target for the board, ready to paste")
    new.set_defaults(func=cmd_board_new)
