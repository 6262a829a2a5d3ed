"""Just enough ELF reading to build an initramfs: shared-library needs and module info.

A fresh Debian machine need not have binutils or kmod's tools, and a guest image must not
depend on what the build machine happens to have installed, so the two facts the image
builder needs (an executable's ``DT_NEEDED`` entries, a kernel module's ``depends=``) are
read here from the ELF section headers directly.
"""

from __future__ import annotations

import struct
from pathlib import Path

_SHT_DYNAMIC = 6
_DT_NEEDED = 1


class ElfError(ValueError):
    """The file is not a 64-bit little-endian ELF file the reader understands."""


class ElfFile:
    """The section table of one 64-bit little-endian ELF file (x86_64)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        if self.data[:4] != b"\x7fELF" or self.data[4] != 2 or self.data[5] != 1:
            raise ElfError(f"{path}: not a 64-bit little-endian ELF file")
        (shoff,) = struct.unpack_from("<Q", self.data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", self.data, 0x3A)
        self.sections = [
            struct.unpack_from("<IIQQQQIIQQ", self.data, shoff + i * shentsize)
            for i in range(shnum)
        ]
        names = self.sections[shstrndx] if shnum else None
        self._names_offset = names[4] if names else 0

    def _section_bytes(self, index: int) -> bytes:
        _, _, _, _, offset, size, *_ = self.sections[index]
        return self.data[offset : offset + size]

    def section(self, name: str) -> bytes | None:
        """The contents of section ``name``, or None if there is none."""
        for index, header in enumerate(self.sections):
            start = self._names_offset + header[0]
            end = self.data.index(b"\0", start)
            if self.data[start:end].decode() == name:
                return self._section_bytes(index)
        return None

    def needed(self) -> list[str]:
        """Sonames of the shared libraries this file needs (``DT_NEEDED``), in order."""
        for header in self.sections:
            if header[1] != _SHT_DYNAMIC:
                continue
            dynamic = self._section_bytes(self.sections.index(header))
            strings = self._section_bytes(header[6])  # sh_link: the string table
            found = []
            for tag, value in struct.iter_unpack("<qQ", dynamic):
                if tag == _DT_NEEDED:
                    found.append(strings[value : strings.index(b"\0", value)].decode())
            return found
        return []  # statically linked

    def modinfo(self) -> dict[str, str]:
        """A kernel module's ``.modinfo`` fields (the last value of a repeated key wins)."""
        raw = self.section(".modinfo") or b""
        fields = {}
        for entry in raw.split(b"\0"):
            key, sep, value = entry.decode(errors="replace").partition("=")
            if sep:
                fields[key] = value
        return fields
