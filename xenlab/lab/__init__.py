"""The lab: a board powered, its console read and a shell driven, as labgrid drivers.

Third stage of the pipeline: it takes a prepared board (`xenlab.plan`) to a
Dom0 shell and never writes run records.  Modules: `strategy` (XenStrategy),
`qemu` (XenQEMUDriver), `console` (ConsoleRecorder, XenShellDriver),
`monitors` (what the console must never show; the one classifier),
`diagnose` (what to collect from a failed board), `places` (labgrid places),
`services` (atftpd, coordinator, exporter), `ser2net` (the serial server
in front of a UART), `rfc2217` (pyserial's RFC 2217 client reading in
chunks), `bench` (the bench board's atftpd and ser2net),
`signals` (SIGINT/SIGTERM end a run in seconds), `pidfile` (our own QEMU,
found again after a SIGKILL).

A farm file imports the drivers with `imports: [xenlab.lab.strategy]`.
"""
