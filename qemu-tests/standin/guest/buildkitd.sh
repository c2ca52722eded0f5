#!/bin/sh
# edgeimg STAND-IN for buildkitd: NOT BuildKit. For edgeimg's VM tests only.
#
# Made by qemu-tests/standin/make-bundle and shipped as bin/buildkitd inside an
# archive named like nerdctl-full's release asset. It builds nothing and serves
# no API. It logs its flags, checks that the containerd worker is set up the way
# edgeimg promises (OCI worker off, containerd worker on K3s' socket and in
# namespace k8s.io), records what it accepted in /run/buildkit/standin-buildkitd.flags
# and stays running until it is stopped. The settings may come from flags or
# from the config file (--config, default /etc/buildkit/buildkitd.toml:
# [worker.oci] enabled, [worker.containerd] enabled/address/namespace);
# flags win, as with buildkitd.
set -u
LABEL='edgeimg stand-in buildkitd (NOT BuildKit)'
WANT_ADDR=/run/k3s/containerd/containerd.sock
WANT_NS=k8s.io
log() { printf '%s: %s\n' "$LABEL" "$*" >&2; }

log "flags: $*"
config=/etc/buildkit/buildkitd.toml
oci='' ctd='' addr='' ns=''
while [ $# -gt 0 ]; do
    case $1 in
        --config) config=${2:-}; shift ;;
        --config=*) config=${1#*=} ;;
        --oci-worker) oci=${2:-}; shift ;;
        --oci-worker=*) oci=${1#*=} ;;
        --containerd-worker) ctd=${2:-}; shift ;;
        --containerd-worker=*) ctd=${1#*=} ;;
        --containerd-worker-addr) addr=${2:-}; shift ;;
        --containerd-worker-addr=*) addr=${1#*=} ;;
        --containerd-worker-namespace) ns=${2:-}; shift ;;
        --containerd-worker-namespace=*) ns=${1#*=} ;;
    esac
    shift
done

if [ -r "$config" ]; then
    log "config $config"
    eval "$(awk '
        /^[[:space:]]*\[/ { s = $0; gsub(/[][[:space:]"]/, "", s); next }
        { l = $0; sub(/#.*/, "", l) }
        l ~ /=/ {
            k = l; sub(/=.*/, "", k); gsub(/[[:space:]]/, "", k)
            v = l; sub(/^[^=]*=[[:space:]]*/, "", v); sub(/[[:space:]]*$/, "", v); gsub(/"/, "", v)
            gsub(/[^A-Za-z0-9_.\/:-]/, "", v)
            if (s == "worker.oci" && k == "enabled") print "c_oci=" v
            if (s == "worker.containerd" && k == "enabled") print "c_ctd=" v
            if (s == "worker.containerd" && k == "address") print "c_addr=" v
            if (s == "worker.containerd" && k == "namespace") print "c_ns=" v
        }' "$config")"
    oci=${oci:-${c_oci:-}} ctd=${ctd:-${c_ctd:-}} addr=${addr:-${c_addr:-}} ns=${ns:-${c_ns:-}}
fi

addr=${addr#unix://}
bad=''
[ "$oci" = false ] || bad="$bad --oci-worker=false (got '${oci:-unset}');"
[ "$ctd" = true ] || bad="$bad --containerd-worker=true (got '${ctd:-unset}');"
[ "$addr" = "$WANT_ADDR" ] || bad="$bad --containerd-worker-addr=$WANT_ADDR (got '${addr:-unset}');"
[ "$ns" = "$WANT_NS" ] || bad="$bad --containerd-worker-namespace=$WANT_NS (got '${ns:-unset}');"
if [ -n "$bad" ]; then
    log "error: wrong worker settings, expected:$bad"
    exit 1
fi
RUN_DIR=${EDGEIMG_STANDIN_PREFIX:-}/run/buildkit
mkdir -p "$RUN_DIR"
printf '# %s\noci-worker=%s\ncontainerd-worker=%s\ncontainerd-worker-addr=%s\ncontainerd-worker-namespace=%s\n' \
    "$LABEL" "$oci" "$ctd" "$addr" "$ns" > "$RUN_DIR/standin-buildkitd.flags"
log "worker settings as expected (containerd worker on $addr, namespace $ns); running, building nothing"
sleeper=''
trap 'log "stopping"; [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; exit 0' TERM INT
while :; do
    sleep 3600 &
    sleeper=$!
    wait "$sleeper" || :
done
