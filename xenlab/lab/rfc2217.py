"""pyserial's RFC 2217 client (labgrid's rfc2217://), reading at network speed.

pyserial-labgrid's `serial.rfc2217.Serial` caps a console at about 0.1 MB/s,
below what ser2net delivers from a fast UART: its reader thread parses the
telnet stream a byte at a time and queues each byte on its own, and `read()`
takes them off one `Queue.get` at a time. (Its other known cost, renegotiating
the line on every `timeout` set, which labgrid does on every read, is already
fixed in that fork: pyserial issue #376.)
`ChunkedRFC2217` keeps pyserial's telnet and RFC 2217 handling and changes
only that: data between telnet commands is queued as one chunk, and read()
and in_waiting count bytes in them. `chunked_reads()` gives it to a driver's
port before it opens.
"""

from __future__ import annotations

import queue
import socket

import serial.rfc2217
from serial.rfc2217 import (DO, DONT, IAC, M_IAC_SEEN, M_NEGOTIATE, M_NORMAL, SB, SE, WILL,
                            WONT)
from serial.serialutil import PortNotOpenError, SerialException, Timeout

_IAC = IAC[0]


class ChunkedRFC2217(serial.rfc2217.Serial):
    """serial.rfc2217.Serial whose reads take what has arrived in chunks."""

    def open(self):
        self._pending = bytearray()  # taken off the queue, not yet read
        self._eof = False
        super().open()

    def _take(self, block: bool, timeout: float | None) -> bool:
        """One chunk from the reader thread into _pending; False on timeout or EOF."""
        chunk = self._read_buffer.get(block, timeout)
        if chunk is None:
            self._eof = True
            return False
        self._pending += chunk
        return True

    @property
    def in_waiting(self):
        if not self.is_open:
            raise PortNotOpenError()
        try:
            while not self._eof and self._take(False, None):
                pass
        except queue.Empty:
            pass
        return len(self._pending)

    def read(self, size=1):
        if not self.is_open:
            raise PortNotOpenError()
        timeout = Timeout(self._timeout)
        try:
            while len(self._pending) < size and not self._eof:
                if self._thread is None or not self._thread.is_alive():
                    raise SerialException("connection failed (reader thread died)")
                if not self._take(True, timeout.time_left()) or timeout.expired():
                    break
        except queue.Empty:  # the timeout
            pass
        data = bytes(self._pending[:size])
        del self._pending[:size]
        if self._eof and not data:
            self._eof = False  # as pyserial: EOF reads empty once, then the dead thread raises
        return data

    def reset_input_buffer(self):
        super().reset_input_buffer()
        self._pending.clear()

    def _telnet_read_loop(self):
        """pyserial's read loop, queueing each run of data as one chunk."""
        mode = M_NORMAL
        suboption = None
        telnet_command = None
        try:
            while self.is_open:
                try:
                    data = self._socket.recv(65536)
                except socket.timeout:
                    continue  # to check from time to time that the port is still open
                except OSError:
                    self._read_buffer.put(None)
                    break
                if not data:
                    self._read_buffer.put(None)
                    break  # lost connection
                out = bytearray()
                i = 0
                while i < len(data):
                    if mode == M_NORMAL and suboption is None:
                        end = data.find(IAC, i)
                        end = len(data) if end < 0 else end
                        out += data[i:end]
                        i = end
                        if i < len(data):
                            mode = M_IAC_SEEN
                            i += 1
                        continue
                    byte = data[i:i + 1]
                    i += 1
                    if mode == M_NORMAL:  # inside a suboption
                        if byte == IAC:
                            mode = M_IAC_SEEN
                        else:
                            suboption += byte
                    elif mode == M_IAC_SEEN:
                        mode = M_NORMAL
                        if byte == IAC:  # a doubled IAC is the data byte 0xff
                            if suboption is not None:
                                suboption += IAC
                            else:
                                out.append(_IAC)
                        elif byte == SB:
                            suboption = bytearray()
                        elif byte == SE:
                            self._telnet_process_subnegotiation(bytes(suboption))
                            suboption = None
                        elif byte in (DO, DONT, WILL, WONT):
                            telnet_command = byte
                            mode = M_NEGOTIATE
                        else:
                            self._telnet_process_command(byte)
                    elif mode == M_NEGOTIATE:
                        self._telnet_negotiate_option(telnet_command, byte)
                        mode = M_NORMAL
                if out:
                    self._read_buffer.put(bytes(out))
        finally:
            if self.logger:
                self.logger.debug("read thread terminated")


def chunked_reads(port) -> None:
    """Make a closed pyserial rfc2217 port (SerialDriver.serial) a ChunkedRFC2217.

    Only before it opens: its reader thread starts at open. Anything else is left alone.
    """
    if type(port) is serial.rfc2217.Serial and not port.is_open:
        port.__class__ = ChunkedRFC2217
