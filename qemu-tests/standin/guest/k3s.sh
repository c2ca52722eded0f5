#!/bin/sh
# edgeimg STAND-IN for K3s: NOT K3s. For edgeimg's VM tests only.
#
# Made by qemu-tests/standin/make-bundle and shipped under the upstream asset
# name (`k3s` / `k3s-arm64`) so that edgeimg consumes it through the same code
# path as a real K3s bundle. It serves no Kubernetes API and runs no kubelet.
# What it does, inside the booted image (Debian's `containerd` and `runc`
# installed):
#   k3s server|agent   start Debian's real containerd as K3s' embedded one
#                      (socket, root and state at K3s' paths), import the images
#                      directory into namespace k8s.io as K3s does (with its
#                      .cache.json import cache), notify systemd READY=1, then
#                      wait on containerd.
#   k3s kubectl get node NAME -o jsonpath={.status.conditions[?(@.type=="Ready")].status}
#                      True when containerd answers and this start's import has
#                      finished, else False. Any other kubectl use fails.
#   k3s ctr ...        Debian's ctr on K3s' socket, namespace k8s.io by default.
#   k3s crictl ...     fails (no CRI here).
# Also works through links named kubectl, ctr, crictl.
set -u
LC_ALL=C
export LC_ALL

# EDGEIMG_STANDIN_PREFIX: for trying the stand-in on a build host only (every
# path below moves under it); unset in images.
P=${EDGEIMG_STANDIN_PREFIX:-}
SOCK=$P/run/k3s/containerd/containerd.sock
STATE=$P/run/k3s/containerd
ROOT=$P/var/lib/rancher/k3s/agent/containerd
AGENT_DIR=$P/var/lib/rancher/k3s/agent
IMAGES=$AGENT_DIR/images
CONTAINERD_CONFIG=$AGENT_DIR/etc/containerd/config.toml
CONFIG=$P/etc/rancher/k3s/config.yaml
KUBECONFIG_OUT=$P/etc/rancher/k3s/k3s.yaml
KUBELET_KUBECONFIG=$AGENT_DIR/kubelet.kubeconfig
IMPORT_LOG=$AGENT_DIR/standin-imported.log
# Like K3s, the stand-in carries its runtime: Debian's containerd, its runc
# shim, ctr and runc, in a tar.gz appended to this script after the marker
# line, unpacked once into the data dir (K3s uses /var/lib/rancher/k3s/data/<hash>).
SELF=$(readlink -f "$0")
DATA=$P/var/lib/rancher/k3s/data/edgeimg-standin
PAYLOAD_MARKER=__EDGEIMG_STANDIN_PAYLOAD__
# By absolute path: /usr/local/bin/ctr may be a link to this script, and PATH
# puts /usr/local/bin first.
REAL_CTR=${EDGEIMG_STANDIN_CTR:-$DATA/bin/ctr}
REAL_CONTAINERD=${EDGEIMG_STANDIN_CONTAINERD:-$DATA/bin/containerd}

# Unpacks the appended runtime unless it is there already.
ensure_runtime() {
    [ -x "$DATA/bin/containerd" ] && return 0
    line=$(grep -an "^$PAYLOAD_MARKER\$" "$SELF" | head -n1 | cut -d: -f1)
    [ -n "$line" ] || return 0
    # Several invocations may race (k3s server and the agent's kubectl polls):
    # each unpacks into its own directory and renames it into place; a rename
    # onto a directory another one already filled fails, and that one is kept.
    tmp=$DATA.tmp.$$
    rm -rf "$tmp" && mkdir -p "$tmp" || die "cannot create $tmp"
    tail -n +"$((line + 1))" "$SELF" | tar -xzf - -C "$tmp" || { rm -rf "$tmp"; die "cannot unpack the runtime from $SELF"; }
    mv -T "$tmp" "$DATA" 2>/dev/null || rm -rf "$tmp"
    [ -x "$DATA/bin/containerd" ] || die "no runtime in $DATA after unpacking"
}
ensure_runtime
# containerd finds its shim, and the shim runc, on PATH.
PATH=$DATA/bin:$PATH
export PATH
SOCKET_TIMEOUT=${EDGEIMG_STANDIN_SOCKET_TIMEOUT:-120}
NO_API='edgeimg stand-in: no Kubernetes API (this is not K3s)'
VERSION_LINE='k3s version v0.0.0-standin (edgeimg STAND-IN for K3s, NOT K3s)'

log() { printf 'edgeimg stand-in k3s (NOT K3s): %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ctr_on_sock() { "$REAL_CTR" -a "$SOCK" "$@"; }
containerd_answers() { ctr_on_sock version >/dev/null 2>&1; }

# The arguments with every token value replaced by ***.
redacted_args() {
    out='' hide=no
    for a in "$@"; do
        if [ "$hide" = yes ]; then a='***'; hide=no; fi
        case $a in
            --token|-t|--agent-token) hide=yes ;;
            --token=*|--agent-token=*) a="${a%%=*}=***" ;;
        esac
        out="$out $a"
    done
    printf '%s' "${out# }"
}

# Top-level keys of config.yaml (never their values: the token may be there).
config_keys() {
    sed -n 's/^\([A-Za-z0-9_.-][A-Za-z0-9_.-]*\)[[:space:]]*:.*/\1/p' "$CONFIG" | tr '\n' ' '
}

# The value of a top-level scalar key of config.yaml (quotes removed).
config_value() {
    [ -r "$CONFIG" ] || return 0
    sed -n "s/^$1[[:space:]]*:[[:space:]]*//p" "$CONFIG" | head -n 1 | sed 's/[[:space:]]*#.*$//; s/^"\(.*\)"$/\1/; s/^'"'"'\(.*\)'"'"'$/\1/'
}

node_name() {
    n=$(config_value node-name)
    [ -n "$n" ] || n=$(cat /proc/sys/kernel/hostname)
    printf '%s' "$n" | tr '[:upper:]' '[:lower:]'
}

# Modification time as Go's encoding/json writes a time.Time (RFC 3339 with
# nanoseconds, trailing zeros dropped), in UTC.
go_mtime() {
    t=$(date -u -r "$1" +%Y-%m-%dT%H:%M:%S.%N) || return 1
    printf '%sZ' "$(printf '%s' "$t" | sed 's/\.\{0,1\}0*$//')"
}

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

write_containerd_config() {
    mkdir -p "$(dirname "$CONTAINERD_CONFIG")" "$STATE" "$ROOT"
    cat > "$CONTAINERD_CONFIG" <<CFG
# Written by edgeimg's STAND-IN for K3s (NOT K3s): Debian's containerd at the
# paths K3s' embedded containerd uses.
version = 2
root = "$ROOT"
state = "$STATE"
# No kubelet talks CRI to the stand-in.
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$SOCK"
CFG
}

# K3s' import cache (.cache.json in the images directory), as K3s documents it
# (k3s-io/k3s#12237, docs.k3s.io "Import Images"; image names added in
# k3s-io/k3s#14266): it is only used when the file already exists (K3s opens
# it without O_CREATE); it maps each archive's absolute path to
# {"size":N,"modTime":"<RFC 3339>","images":[...]}; an archive whose path, size
# and modification time match an entry is not imported again. How close this
# is: same file, same keys, same skip rule; written compact like Go's
# json.Marshal, times in UTC (K3s writes the local zone, so an entry written by
# real K3s in a non-UTC zone does not match here and the archive is imported
# again, which is the safe side). K3s re-adds its pinned label to images of
# skipped archives; the stand-in does not label images. Paths holding a '"'
# or '\' are not matched against the cache.
CACHE_FLAT=''
cache_lookup_images() { # $1 = entry prefix; prints the images array body, status 1 if absent
    case $CACHE_FLAT in
        *"$1"*) ;;
        *) return 1 ;;
    esac
    printf '%s' "$CACHE_FLAT" | awk -v k="$1" '{
        i = index($0, k); rest = substr($0, i + length(k));
        if (substr(rest, 1, 1) != "," && substr(rest, 1, 1) != "}") exit 1;
        p = "\"images\":["; j = index(rest, p); e = index(rest, "}");
        if (j == 1 + 1 && j < e) { rest = substr(rest, j + length(p)); print substr(rest, 1, index(rest, "]") - 1) }
    }'
}

import_images() {
    mkdir -p "$AGENT_DIR"
    tmp=$IMPORT_LOG.tmp
    {
        echo "# edgeimg STAND-IN for K3s (NOT K3s): import of the images directory, this start"
        echo "# containerd-pid $CONTAINERD_PID"
    } > "$tmp"
    cache=$IMAGES/.cache.json use_cache=no entries=''
    if [ -f "$cache" ]; then
        use_cache=yes
        CACHE_FLAT=$(tr -d ' \t\r\n' < "$cache")
        log "import cache $cache in use"
    fi
    for f in "$IMAGES"/*; do
        [ -f "$f" ] || continue
        case $f in
            *.tar) dec='cat' ;;
            *.tar.zst|*.tzst) dec='zstd -dc' ;;
            *.tar.gz|*.tgz) dec='gzip -dc' ;;
            *.txt) log "not pulling the images listed in $f: the stand-in has no registry access"; continue ;;
            *) log "ignoring $f (not an image archive the stand-in imports)"; continue ;;
        esac
        size=$(stat -c %s "$f") mtime=$(go_mtime "$f")
        key="$(json_str "$f"):{\"size\":$size,\"modTime\":\"$mtime\""
        if [ "$use_cache" = yes ] && names=$(cache_lookup_images "$key"); then
            log "skipping $f: unchanged since its last import (.cache.json)"
            echo "cached $f" >> "$tmp"
            entries="$entries,$key,\"images\":[$names]}"
            continue
        fi
        log "importing images from $f"
        out=$STATE/standin-import.out st=$STATE/standin-import.status
        rm -f "$st"
        { $dec "$f" || echo "$?" > "$st"; } | ctr_on_sock -n k8s.io images import --all-platforms - > "$out" 2>&1
        rc=$?
        sed 's/^/  ctr: /' "$out" >&2
        if [ "$rc" -ne 0 ] || [ -s "$st" ]; then
            log "error: importing $f failed (ctr status $rc, decompressor status $(cat "$st" 2>/dev/null || echo 0))"
            echo "failed $f" >> "$tmp"
            continue
        fi
        imgs=$(sed -n 's/^unpacking \([^ ]*\) .*/\1/p' "$out" | sort -u)
        [ -n "$imgs" ] || imgs=$(sed -n 's/^\([^ ]*\) saved$/\1/p' "$out" | sort -u)
        names=''
        for i in $imgs; do
            log "imported $i"
            names="$names,$(json_str "$i")"
        done
        echo "imported $f $(printf '%s\n' "$imgs" | tr '\n' ' ')" | sed 's/ *$//' >> "$tmp"
        entries="$entries,$key,\"images\":[${names#,}]}"
    done
    if [ "$use_cache" = yes ]; then
        # Written in place (not renamed) like K3s, so a .cache.json that is a
        # link to writable storage keeps working.
        if printf '{%s}\n' "${entries#,}" > "$cache"; then :; else log "warning: could not write $cache"; fi
    fi
    mv -f "$tmp" "$IMPORT_LOG"
}

write_kubeconfig_markers() {
    mkdir -p "$(dirname "$KUBECONFIG_OUT")" "$(dirname "$KUBELET_KUBECONFIG")"
    old=$(umask); umask 077
    marker="# edgeimg STAND-IN for K3s: NOT K3s. Not a usable kubeconfig: the stand-in
# serves no Kubernetes API. Written where K3s writes its kubeconfig, for tests."
    if [ "$ROLE" = server ]; then
        cat > "$KUBECONFIG_OUT" <<KC
$marker
apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
preferences: {}
users:
- name: default
  user: {}
KC
        chmod 0600 "$KUBECONFIG_OUT"
        mode=$(config_value write-kubeconfig-mode)
        [ -z "$mode" ] || chmod "$mode" "$KUBECONFIG_OUT" || log "warning: bad write-kubeconfig-mode"
    fi
    printf '%s\n' "$marker" > "$KUBELET_KUBECONFIG"
    umask "$old"
}

run_node() {
    ROLE=$1; shift
    log "starting, role $ROLE, arguments: $(redacted_args "$@")"
    if [ -r "$CONFIG" ]; then
        log "config $CONFIG keys: $(config_keys)"
    else
        log "no $CONFIG"
    fi
    [ -x "$REAL_CONTAINERD" ] || die "$REAL_CONTAINERD not found (the runtime payload did not unpack)"
    [ -x "$REAL_CTR" ] || die "$REAL_CTR not found (the runtime payload did not unpack)"
    if containerd_answers; then die "something already serves $SOCK"; fi
    rm -f "$IMPORT_LOG" "$IMPORT_LOG.tmp"
    write_containerd_config
    "$REAL_CONTAINERD" --config "$CONTAINERD_CONFIG" &
    CONTAINERD_PID=$!
    trap 'log "stopping containerd"; kill -TERM "$CONTAINERD_PID" 2>/dev/null' TERM INT
    deadline=$(( $(date +%s) + SOCKET_TIMEOUT ))
    until containerd_answers; do
        kill -0 "$CONTAINERD_PID" 2>/dev/null || { wait "$CONTAINERD_PID"; die "containerd exited with status $? before serving $SOCK"; }
        [ "$(date +%s)" -lt "$deadline" ] || { kill -TERM "$CONTAINERD_PID"; die "containerd did not serve $SOCK within ${SOCKET_TIMEOUT}s"; }
        sleep 0.2
    done
    log "containerd (pid $CONTAINERD_PID) serves $SOCK"
    mkdir -p "$IMAGES"
    import_images
    write_kubeconfig_markers
    if [ -n "${NOTIFY_SOCKET:-}" ]; then
        systemd-notify --ready --status="edgeimg STAND-IN for K3s (NOT K3s): containerd up, images imported" || log "warning: systemd-notify failed"
    fi
    log "ready (stand-in: containerd up, images imported; no Kubernetes)"
    rc=0
    wait "$CONTAINERD_PID"; rc=$?
    while kill -0 "$CONTAINERD_PID" 2>/dev/null; do wait "$CONTAINERD_PID"; rc=$?; done
    log "containerd exited with status $rc"
    exit "$rc"
}

ready_status() {
    containerd_answers || { echo False; return; }
    # The log is removed when this start begins and put in place when its
    # import ends; containerd's socket lives in /run, so an old boot's log
    # cannot make a node Ready.
    if [ -f "$IMPORT_LOG" ]; then echo True; else echo False; fi
}

run_kubectl() {
    # Global flags kubectl accepts anywhere; the stand-in ignores their values.
    words=''
    output=''
    while [ $# -gt 0 ]; do
        case $1 in
            --kubeconfig|--request-timeout|-s|--server|--context) shift ;;
            --kubeconfig=*|--request-timeout=*|--server=*|--context=*) ;;
            -o|--output) shift; output=${1:-} ;;
            -o=*|--output=*) output=${1#*=} ;;
            -o*) output=${1#-o} ;;
            *) words="$words $1" ;;
        esac
        [ $# -gt 0 ] && shift
    done
    # shellcheck disable=SC2086
    set -- $words
    want='jsonpath={.status.conditions[?(@.type=="Ready")].status}'
    norm=$(printf '%s' "$output" | tr "'" '"' | tr -d ' ')
    case $norm in "jsonpath=\"{"*"}\"") norm="jsonpath=${norm#jsonpath=\"}"; norm=${norm%\"} ;; esac
    if [ $# -eq 3 ] && [ "$1" = get ] && { [ "$2" = node ] || [ "$2" = nodes ] || [ "$2" = no ]; } && [ "$norm" = "$want" ]; then
        if [ "$3" != "$(node_name)" ]; then
            echo "Error from server (NotFound): nodes \"$3\" not found (edgeimg stand-in: this node is \"$(node_name)\"; not K3s)" >&2
            exit 1
        fi
        ready_status
        exit 0
    fi
    echo "$NO_API" >&2
    exit 1
}

case $(basename "$0") in
    kubectl|ctr|crictl) set -- "$(basename "$0")" "$@" ;;
esac
cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    server|agent) run_node "$cmd" "$@" ;;
    kubectl) run_kubectl "$@" ;;
    ctr)
        # As `k3s ctr`: K3s' socket and namespace k8s.io unless the caller says otherwise.
        [ "$(readlink -f "$REAL_CTR")" != "$(readlink -f "$0")" ] || die "$REAL_CTR is this script"
        CONTAINERD_ADDRESS=${CONTAINERD_ADDRESS:-$SOCK}
        CONTAINERD_NAMESPACE=${CONTAINERD_NAMESPACE:-k8s.io}
        export CONTAINERD_ADDRESS CONTAINERD_NAMESPACE
        exec "$REAL_CTR" "$@" ;;
    crictl) echo "$NO_API" >&2; exit 1 ;;
    --version|-v|version) echo "$VERSION_LINE" ;;
    *)
        echo "$VERSION_LINE" >&2
        echo "usage: k3s server|agent [flags] | k3s kubectl get node NAME -o jsonpath=... | k3s ctr ..." >&2
        exit 1 ;;
esac
exit $?
