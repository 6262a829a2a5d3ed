"""Build a guest image (a kernel and a gzip initramfs) from Debian packages, cached.

The image is a set-up product, never a test-time download: ``make`` builds it under a
git-ignored directory and it is rebuilt only when an input changes. The inputs are the
exact ``.deb`` file names apt would fetch now (a version bump renames one), the image's
spec, the extra files (keys, configs) and the builder's own source; their hash is kept
beside the image, and a build whose hash matches does nothing.

The initramfs holds only what the spec asks for: the named binaries with the shared
libraries they need (found through ``DT_NEEDED``, transitively), busybox with a symlink
per applet, the named kernel modules with their dependencies in load order (listed in
``/etc/modules.load``), and the spec's own files. Module load order is computed here,
from each module's ``.modinfo``, because the kernel package ships no ``modules.dep``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import LabError
from bench.qemu import debian_packages
from bench.qemu.cpio import CpioEntry, write_initramfs
from bench.qemu.elf import ElfFile

#: Where shared libraries are looked up in the staging tree, in ld.so's order.
_LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
#: Where they go in the image (Debian's multiarch directory, searched by ld.so).
_IMAGE_LIBRARY_DIR = "/lib/x86_64-linux-gnu"
_INTERPRETER = "/lib64/ld-linux-x86-64.so.2"
_DIRECTORIES = (
    "/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/lib", "/lib64", _IMAGE_LIBRARY_DIR,
    "/etc", "/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/var", "/var/empty",
)  # fmt: skip


@dataclass(frozen=True)
class GuestImageSpec:
    """What goes into one guest image."""

    name: str
    #: Packages whose files are taken (their shared-library dependencies come along).
    packages: tuple[str, ...]
    #: Executables to copy (paths in the packages' tree), with the libraries they need.
    binaries: tuple[str, ...]
    #: Kernel modules by name (``igb``, ``vfio-pci``); dependencies are added.
    modules: tuple[str, ...] = ()
    #: Data files (firmware, Python modules) copied as they are from the packages' tree
    #: to the same path in the image; a directory brings everything under it. Symlinks
    #: are followed within the tree; no libraries are looked up for these.
    data: tuple[str, ...] = ()
    #: Extra files: image path -> (mode, contents).
    files: Mapping[str, tuple[int, bytes]] = field(default_factory=dict)
    #: Extra symlinks: image path -> target.
    symlinks: Mapping[str, str] = field(default_factory=dict)
    #: The kernel: Debian's generic kernel metapackage (never the cloud one: it lacks igb).
    kernel_meta: str = "linux-image-amd64"

    def fingerprint(self) -> dict[str, object]:
        """Everything of the spec that changes the image, as JSON-ready data."""
        return {
            "name": self.name,
            "packages": list(self.packages),
            "binaries": list(self.binaries),
            "modules": list(self.modules),
            "data": list(self.data),
            "files": {p: [m, hashlib.sha256(d).hexdigest()] for p, (m, d) in self.files.items()},
            "symlinks": dict(self.symlinks),
            "kernel_meta": self.kernel_meta,
        }


@dataclass(frozen=True)
class GuestImage:
    """A built image: what QEMU's ``-kernel`` and ``-initrd`` take."""

    directory: Path
    kernel: Path
    initrd: Path
    kernel_release: str


#: The modules that decide what an image holds (the spec's own content is fingerprinted
#: separately); a change to QEMU's command line or QMP does not rebuild an image.
_BUILDER_SOURCES = ("image_builder.py", "debian_packages.py", "cpio.py", "elf.py")


def _source_hash() -> str:
    digest = hashlib.sha256()
    for source in (Path(__file__).parent / name for name in _BUILDER_SOURCES):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()


def _resolve(root: Path, path: str) -> Path:
    """``path`` inside staging tree ``root``, following symlinks within the tree."""
    current = root / path.lstrip("/")
    for _ in range(20):
        if not current.is_symlink():
            return current
        target = current.readlink()
        current = (
            root / str(target).lstrip("/") if target.is_absolute() else current.parent / target
        )
    raise LabError(f"guest image: symlink loop at {path}")


def _find_library(root: Path, soname: str) -> Path:
    for directory in _LIBRARY_DIRS:
        candidate = _resolve(root, f"{directory}/{soname}")
        if candidate.is_file():
            return candidate
    raise LabError(f"guest image: no package provides {soname} (add its package to the spec)")


def _with_libraries(root: Path, binaries: tuple[str, ...]) -> dict[str, Path]:
    """Image path -> staging file for the binaries and, transitively, their libraries."""
    chosen: dict[str, Path] = {}
    queue: list[tuple[str, Path]] = []
    for binary in binaries:
        source = _resolve(root, binary)
        if not source.is_file():
            raise LabError(f"guest image: {binary} is in none of the spec's packages")
        queue.append((binary, source))
    while queue:
        image_path, source = queue.pop()
        if image_path in chosen:
            continue
        chosen[image_path] = source
        for soname in ElfFile(source).needed():
            target = (
                _INTERPRETER if soname.startswith("ld-linux") else f"{_IMAGE_LIBRARY_DIR}/{soname}"
            )
            queue.append((target, _find_library(root, soname)))
    return chosen


def _data_files(root: Path, paths: tuple[str, ...]) -> dict[str, Path]:
    """Image path -> staging file for the spec's data files and directories."""
    chosen: dict[str, Path] = {}
    for path in paths:
        source = _resolve(root, path)
        if source.is_file():
            chosen[path] = source
        elif source.is_dir():
            for member in sorted(source.rglob("*")):
                image_path = f"{path.rstrip('/')}/{member.relative_to(source)}"
                resolved = _resolve(root, image_path)
                if resolved.is_file():
                    chosen[image_path] = resolved
        else:
            raise LabError(f"guest image: {path} is in none of the spec's packages")
    return chosen


def _module_index(modules_dir: Path) -> dict[str, Path]:
    return {ko.stem.replace("-", "_"): ko for ko in modules_dir.rglob("*.ko")}


def _module_load_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """``wanted`` modules and their dependencies, each after what it depends on."""
    index = _module_index(modules_dir)
    order: list[Path] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key not in index:
            raise LabError(f"guest image: the kernel has no module {name}")
        ko = index[key]
        if ko in order or key in visiting:
            return
        visiting.add(key)
        for dependency in filter(None, ElfFile(ko).modinfo().get("depends", "").split(",")):
            visit(dependency)
        order.append(ko)

    for module in wanted:
        visit(module)
    return order


def _busybox_applets(root: Path) -> list[str]:
    """The applets of the packages' static busybox (it runs anywhere: no libraries)."""
    busybox = _resolve(root, "/bin/busybox")
    done = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise LabError(f"guest image: {busybox} --list-full failed: {done.stderr.strip()}")
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _entries(spec: GuestImageSpec, root: Path, release: str) -> list[CpioEntry]:
    files: dict[str, CpioEntry] = {}

    def add_file(path: str, source: Path) -> None:
        mode = stat.S_IFREG | (0o755 if source.stat().st_mode & 0o111 else 0o644)
        files[path] = CpioEntry(path, mode, source.read_bytes())

    for image_path, source in _with_libraries(root, ("/bin/busybox", *spec.binaries)).items():
        add_file(image_path, source)
    for image_path, source in _data_files(root, spec.data).items():
        add_file(image_path, source)
    modules_dir = root / "lib/modules" / release
    load = []
    for ko in _module_load_order(modules_dir, spec.modules):
        path = f"/lib/modules/{release}/{ko.name}"
        add_file(path, ko)
        load.append(path)
    files["/etc/modules.load"] = CpioEntry(
        "/etc/modules.load", stat.S_IFREG | 0o644, "".join(f"{p}\n" for p in load).encode()
    )
    for path, (mode, data) in spec.files.items():
        files[path] = CpioEntry(path, stat.S_IFREG | mode, data)
    links = {f"/{a.lstrip('/')}": "/bin/busybox" for a in _busybox_applets(root)}
    links.update(spec.symlinks)
    symlinks = [
        CpioEntry(p, stat.S_IFLNK | 0o777, target=t) for p, t in links.items() if p not in files
    ]
    directories = {*_DIRECTORIES, f"/lib/modules/{release}"}
    for path in [*files, *(s.path for s in symlinks)]:
        parent = str(Path(path).parent)
        while parent != "/":
            directories.add(parent)
            parent = str(Path(parent).parent)
    dirs = [CpioEntry(d, stat.S_IFDIR | 0o755) for d in sorted(directories)]
    return [*dirs, *sorted(files.values(), key=lambda e: e.path), *symlinks]


def build_image(spec: GuestImageSpec, directory: Path, log: bool = True) -> GuestImage:
    """Build ``spec`` into ``directory`` unless the image there is up to date; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    kernel_package = debian_packages.versioned_kernel_package(spec.kernel_meta)
    release = kernel_package.removeprefix("linux-image-")
    packages = [*debian_packages.library_closure(spec.packages), kernel_package]
    inputs = {
        "spec": spec.fingerprint(),
        "debs": debian_packages.package_files(packages),
        "builder": _source_hash(),
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    image = GuestImage(directory, directory / "vmlinuz", directory / "initrd.img", release)
    key_file = directory / "inputs.sha256"
    if key_file.exists() and key_file.read_text().strip() == key and image.initrd.exists():
        if log:
            print(f"guest image {spec.name}: up to date in {directory}")
        return image
    key_file.unlink(missing_ok=True)
    debs = debian_packages.download(packages, directory / "debs")
    staging = directory / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        debian_packages.unpack(debs, staging)
        shutil.copyfile(staging / "boot" / f"vmlinuz-{release}", image.kernel)
        image.initrd.write_bytes(write_initramfs(_entries(spec, staging, release)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (directory / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")
    key_file.write_text(key + "\n")
    if log:
        size = image.initrd.stat().st_size / 1e6
        print(
            f"guest image {spec.name}: built in {directory} "
            f"(kernel {release}, initrd {size:.1f} MB)"
        )
    return image
