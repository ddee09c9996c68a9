#!/usr/bin/env python3
"""Writes a one-layer OCI image archive (oci-layout, index.json, blobs) from host files.

No Docker, no registry: the real test node imports the archive with
`ctr -n k8s.io images import`. The output is reproducible: tar entries are sorted, owned
as the spec says, dated 1970-01-01, and the layer is not compressed, so the same inputs
give the same digests.

    oci-image.py SPEC.json OUT.tar

SPEC: {"ref": "localhost/neurallog-test/x:tag",
       "files": [[host_path, image_path], ...]      regular files (symlinks followed),
       "binaries": [[host_path, image_path], ...]  files plus the shared libraries and the
                                                    loader that `ldd` lists for them,
       "dirs": [[image_path, uid, gid, mode], ...],
       "text": [[image_path, content, mode], ...],
       "links": [[image_path, target], ...]         symbolic links,
       "config": {...}}                             the OCI image config's "config"
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile


def shared_libraries(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0 or "statically linked" in out.stdout + out.stderr:
        return []
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            path = line.split("=>")[1].split("(")[0].strip()
        else:
            path = line.split("(")[0].strip()
        if path.startswith("/"):
            libs.append(path)
    return libs


def main():
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)

    # image path -> (kind, payload, uid, gid, mode)
    entries = {}

    def add_dir(path, uid=0, gid=0, mode=0o755):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            entries.setdefault(parent, ("dir", None, 0, 0, 0o755))
        entries[path] = ("dir", None, uid, gid, mode)

    def add_file(image_path, data, mode):
        image_path = image_path.strip("/")
        parent = os.path.dirname(image_path)
        if parent and parent not in entries:
            add_dir(parent)
        entries[image_path] = ("file", data, 0, 0, mode)

    def add_host_file(host, image_path):
        with open(host, "rb") as f:
            data = f.read()
        mode = os.stat(host).st_mode & 0o777
        add_file(image_path, data, mode)

    for host, image_path in spec.get("files", []):
        add_host_file(host, image_path)
    for host, image_path in spec.get("binaries", []):
        add_host_file(host, image_path)
        for lib in shared_libraries(host):
            add_host_file(lib, lib)
    for image_path, uid, gid, mode in spec.get("dirs", []):
        add_dir(image_path, uid, gid, int(mode, 8) if isinstance(mode, str) else mode)
    for image_path, content, mode in spec.get("text", []):
        add_file(image_path, content.encode(), int(mode, 8) if isinstance(mode, str) else mode)

    for image_path, target in spec.get("links", []):
        image_path = image_path.strip("/")
        parent = os.path.dirname(image_path)
        if parent and parent not in entries:
            add_dir(parent)
        entries[image_path] = ("link", target, 0, 0, 0o777)

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(entries):
            kind, data, uid, gid, mode = entries[path]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid, info.gid, info.mode = uid, gid, mode
            info.uname = info.gname = ""
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    layer_digest = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()

    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": spec.get("config", {}),
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/cluster/node/oci-image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": len(layer_bytes),
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": spec["ref"],
                    "org.opencontainers.image.ref.name": spec["ref"],
                },
            }
        ],
    }
    blobs = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index, sort_keys=True, separators=(",", ":")).encode()),
    ]
    for digest, data in (
        (layer_digest, layer_bytes),
        (config_digest, config_bytes),
        (manifest_digest, manifest_bytes),
    ):
        blobs.append(("blobs/sha256/" + digest.split(":")[1], data))

    tmp = out_path + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in blobs:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out_path)
    print(manifest_digest)


if __name__ == "__main__":
    main()
