"""The learnware package format: manifest, safe zips, digests, model runtimes, import."""

from learndock.package.archive import digest_directory, digest_zip, extract_zip, inspect_zip
from learndock.package.build import CheckReport, check_package, pack, package_digest
from learndock.package.learnware import Learnware, load_learnware
from learndock.package.manifest import MANIFEST_NAME, Manifest
from learndock.package.writer import write_package

__all__ = [
    "MANIFEST_NAME",
    "CheckReport",
    "Learnware",
    "Manifest",
    "check_package",
    "digest_directory",
    "digest_zip",
    "extract_zip",
    "inspect_zip",
    "load_learnware",
    "pack",
    "package_digest",
    "write_package",
]
