"""Test packages for modgate's PyPI tests, written into a directory that
pypiserver then serves: two wheels (alpha needs beta) and an sdist (gamma).
Usage: packages.py DIR [TAMPERED_DIR]: with TAMPERED_DIR, the same files
with alpha's wheel changed (same name, other bytes). With MODGATE_BIG_WHEEL
set, also `big`, a wheel of that many random bytes."""

import base64
import hashlib
import io
import os
import sys
import tarfile
import zipfile


def wheel(directory, name, version, requires=(), payload="", blob=b""):
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n{payload}",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: modgate-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    target = os.path.join(directory, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in sorted(files.items()):
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, text)
        if blob:
            info = zipfile.ZipInfo(f"{name}/blob.bin", date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, blob)


def sdist(directory, name, version):
    root = f"{name}-{version}"
    files = {
        f"{root}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{root}/setup.py": f"from setuptools import setup\nsetup(name={name!r}, version={version!r}, packages=[{name!r}])\n",
        f"{root}/{name}/__init__.py": f"VERSION = {version!r}\n",
    }
    target = os.path.join(directory, f"{root}.tar.gz")
    with tarfile.open(target, "w:gz") as archive:
        for path, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1767225600
            archive.addfile(info, io.BytesIO(data))


def main():
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    wheel(directory, "alpha", "1.0", ["beta"])
    wheel(directory, "beta", "2.0")
    sdist(directory, "gamma", "3.0")
    big = int(os.environ.get("MODGATE_BIG_WHEEL", "0"))
    if big:
        wheel(directory, "big", "1.0", blob=os.urandom(big))
    if len(sys.argv) > 2:
        tampered = sys.argv[2]
        os.makedirs(tampered, exist_ok=True)
        wheel(tampered, "alpha", "1.0", ["beta"], payload="# tampered\n")
        wheel(tampered, "beta", "2.0")
        sdist(tampered, "gamma", "3.0")


main()
