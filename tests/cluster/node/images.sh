#!/usr/bin/env bash
# Builds the real test node's images as OCI archives, without Docker or a registry, into
# the versioned cache directory (images/NAME.tar). Each archive is rebuilt only when its
# inputs change: the stamp beside it hashes its spec and every host file it copies.
#
#   images.sh [NAME...]   default: pause redis server-standin coredns
#   images.sh operator auth-stub   the operator's image and an Auth stub's, from
#                                  target/release (cargo build --release --bins
#                                  -p neurallog-operator -p neurallog-auth-stub)
#
# Prints "NAME REF ARCHIVE" per image on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "$here/../lib.sh"

bin=$(cluster_bin_dir)
out=$(cluster_cache_dir)/images
mkdir -p "$out"
# One build at a time (tests build images in parallel).
exec 8>"$out/.lock"
flock 8

# The references pods use. Never "latest" (that makes the kubelet pull), and all under
# localhost/, which no registry serves: the kubelet finds them already on the node.
image_ref() {
  case $1 in
    pause) echo "localhost/neurallog-test/pause:1" ;;
    redis) echo "localhost/neurallog-test/redis:$(dpkg-query -W -f '${Version}' redis-server | sed 's/^[0-9]*://; s/[^A-Za-z0-9_.-]/_/g')" ;;
    server-standin) echo "localhost/neurallog-test/server-standin:1" ;;
    coredns) echo "localhost/neurallog-test/coredns:${COREDNS_VERSION#v}" ;;
    operator) echo "localhost/neurallog-test/tenant-operator:$(sed -nE 's/^version = "(.*)"/\1/p' "$repo_root/Cargo.toml" | head -n 1)" ;;
    auth-stub) echo "localhost/neurallog-test/auth-stub:$(sed -nE 's/^version = "(.*)"/\1/p' "$repo_root/Cargo.toml" | head -n 1)" ;;
    *) die "unknown image $1" ;;
  esac
}

# A passwd and group file naming the image's users (none of them can log in).
passwd_text() {
  local line out=""
  for line in "root:0" "$@"; do
    out+="${line%%:*}:x:${line#*:}:${line#*:}::/nonexistent:/sbin/nologin\n"
  done
  printf '%s' "$out"
}
group_text() {
  local line out=""
  for line in "root:0" "$@"; do
    out+="${line%%:*}:x:${line#*:}:\n"
  done
  printf '%s' "$out"
}

# Debian's static busybox, for probes (sh, grep) and for tests run with kubectl exec.
busybox_links() {
  local a sep=""
  for a in sh grep cat ls id touch nc wget nslookup sleep timeout; do
    printf '%s["/bin/%s", "busybox"]' "$sep" "$a"
    sep=", "
  done
}

spec_pause() {
  cat <<EOF
{"ref": "$1", "files": [["$bin/pause", "/pause"]],
 "config": {"Entrypoint": ["/pause"], "User": "65535:65535"}}
EOF
}

# Debian's redis-server and redis-cli with their shared libraries, and busybox for the
# readiness probe's `sh -c "redis-cli ... | grep -q PONG"`.
spec_redis() {
  cat <<EOF
{"ref": "$1",
 "binaries": [["/usr/bin/redis-check-rdb", "/usr/bin/redis-server"], ["/usr/bin/redis-cli", "/usr/bin/redis-cli"]],
 "files": [["/bin/busybox", "/bin/busybox"]],
 "links": [$(busybox_links)],
 "dirs": [["/data", 999, 999, "0755"], ["/tmp", 0, 0, "1777"], ["/etc/redis", 0, 0, "0755"]],
 "text": [["/etc/passwd", "$(passwd_text redis:999)", "0644"], ["/etc/group", "$(group_text redis:999)", "0644"]],
 "config": {"Entrypoint": ["redis-server"], "User": "999:999", "WorkingDir": "/data",
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "ExposedPorts": {"6379/tcp": {}}}}
EOF
}

spec_server_standin() {
  cat <<EOF
{"ref": "$1", "files": [["$bin/server-standin", "/server-standin"], ["/bin/busybox", "/bin/busybox"]],
 "links": [$(busybox_links)],
 "dirs": [["/tmp", 0, 0, "1777"]],
 "text": [["/etc/passwd", "$(passwd_text neurallog:1000)", "0644"], ["/etc/group", "$(group_text neurallog:1000)", "0644"]],
 "config": {"Entrypoint": ["/server-standin"], "User": "1000:1000", "ExposedPorts": {"3030/tcp": {}},
            "Labels": {"org.opencontainers.image.description": "NeuralLog server STAND-IN for tests, not the NeuralLog server"}}}
EOF
}

spec_coredns() {
  cat <<EOF
{"ref": "$1", "files": [["$bin/coredns", "/coredns"]],
 "config": {"Entrypoint": ["/coredns"], "User": "65532:65532", "ExposedPorts": {"53/udp": {}, "53/tcp": {}}}}
EOF
}

# The Dockerfile's runtime stage, from the release binary built here: the same user
# (65532:65532), entrypoint, command, exposed port and journal directory owned by that user.
# The binary is linked against glibc here (the Dockerfile builds a static musl one), so
# its shared libraries come along.
spec_operator() {
  local binary=$repo_root/target/release/neurallog-operator
  [ -x "$binary" ] || die "$binary is missing: cargo build --release --bin neurallog-operator"
  cat <<EOF
{"ref": "$1", "binaries": [["$binary", "/neurallog-operator"]],
 "dirs": [["/var/lib/neurallog-operator", 65532, 65532, "0755"], ["/tmp", 0, 0, "1777"]],
 "text": [["/etc/passwd", "$(passwd_text nonroot:65532)", "0644"], ["/etc/group", "$(group_text nonroot:65532)", "0644"]],
 "config": {"Entrypoint": ["/neurallog-operator"], "Cmd": ["run", "--metrics-addr", "0.0.0.0:8080"],
            "User": "65532:65532", "ExposedPorts": {"8080/tcp": {}}}}
EOF
}

# The Auth stub (the auth-stub/ crate), for the in-cluster operator to register tenants
# with.
spec_auth_stub() {
  local binary=$repo_root/target/release/neurallog-auth-stub
  [ -x "$binary" ] || die "$binary is missing: cargo build --release -p neurallog-auth-stub --bin neurallog-auth-stub"
  cat <<EOF
{"ref": "$1", "binaries": [["$binary", "/neurallog-auth-stub"]],
 "config": {"Entrypoint": ["/neurallog-auth-stub"], "Cmd": ["--listen", "0.0.0.0:3040"],
            "User": "65532:65532", "ExposedPorts": {"3040/tcp": {}}}}
EOF
}

# The stamp: the spec plus the content of every host file it names.
stamp_of() {
  local spec=$1
  {
    cat "$spec"
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))
for k in ("files","binaries"):
    for h,_ in s.get(k,[]): print(h)' "$spec" | while read -r f; do
      sha256sum "$f"
      [ -n "$(ldd "$f" 2>/dev/null | grep '=>' || true)" ] && ldd "$f" | awk '/=>/ {print $3}' | xargs -r sha256sum
    done
    sha256sum "$here/oci-image.py"
  } | sha256sum | cut -c1-32
}

names=${*:-pause redis server-standin coredns}
for name in $names; do
  ref=$(image_ref "$name")
  archive=$out/$name.tar
  spec=$out/$name.json
  "spec_${name//-/_}" "$ref" >"$spec.new"
  mv -f "$spec.new" "$spec"
  stamp=$(stamp_of "$spec")
  if [ ! -f "$archive" ] || [ "$(cat "$archive.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "building image $ref"
    python3 "$here/oci-image.py" "$spec" "$archive" >/dev/null
    echo "$stamp" >"$archive.stamp"
  fi
  echo "$name $ref $archive"
done
