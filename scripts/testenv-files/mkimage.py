#!/usr/bin/env python3
"""Pack a rootfs directory into an OCI image-layout tar that `ctr images import` accepts.

No registry is reachable in CI, so test images are built locally. One
uncompressed layer keeps this dependency-free (stdlib only) and deterministic:
mtimes and owners are normalised, so identical inputs give identical digests.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

FIXED_MTIME = 0
CREATED = "1970-01-01T00:00:00Z"


def layer_tar(rootfs: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries):
            arc = os.path.relpath(path, rootfs)
            info = tar.gettarinfo(path, arcname=arc)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = FIXED_MTIME
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def blob(data: bytes):
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def canon(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--out", required=True, help="output .tar path")
    ap.add_argument("--ref", action="append", required=True,
                    help="full image name, e.g. docker.io/library/busybox:local (repeatable)")
    ap.add_argument("--entrypoint", action="append", default=[])
    ap.add_argument("--cmd", action="append", default=[])
    args = ap.parse_args()

    layer = layer_tar(args.rootfs)
    layer_digest, layer_size = blob(layer)
    # Uncompressed layer: diff_id == digest.
    config = {
        "created": CREATED,
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": CREATED, "created_by": "scripts/testenv-files/mkimage.py"}],
    }
    if args.entrypoint:
        config["config"]["Entrypoint"] = args.entrypoint
    if args.cmd:
        config["config"]["Cmd"] = args.cmd
    config_bytes = canon(config)
    config_digest, config_size = blob(config_bytes)

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    }
    manifest_bytes = canon(manifest)
    manifest_digest, manifest_size = blob(manifest_bytes)

    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {
                    "io.containerd.image.name": ref,
                    # ref.name is conventionally only the tag part.
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            }
            for ref in args.ref
        ],
    }

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        def add(name: str, data: bytes, mode: int = 0o644, isdir: bool = False):
            info = tarfile.TarInfo(name)
            info.mtime = FIXED_MTIME
            info.mode = mode
            if isdir:
                info.type = tarfile.DIRTYPE
                out.addfile(info)
            else:
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))

        add("oci-layout", canon({"imageLayoutVersion": "1.0.0"}))
        add("index.json", canon(index))
        add("blobs", b"", 0o755, True)
        add("blobs/sha256", b"", 0o755, True)
        for digest, data in ((layer_digest, layer), (config_digest, config_bytes),
                             (manifest_digest, manifest_bytes)):
            add("blobs/sha256/" + digest.split(":", 1)[1], data)
    os.replace(tmp, args.out)
    print(manifest_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
