#!/bin/sh
# edgeimg STAND-IN for nerdctl: NOT nerdctl. For edgeimg's VM tests only.
#
# Made by qemu-tests/standin/make-bundle and shipped inside archives named like
# nerdctl's release assets. It reads /etc/nerdctl/nerdctl.toml (address,
# namespace) as nerdctl does and runs Debian's ctr against that address, so a
# test shows that the toml reaches K3s' containerd. Supported:
#   nerdctl images                      ctr images ls
#   nerdctl ps [-a]                     ctr containers ls
#   nerdctl run --rm [--name N] IMAGE [CMD...]   ctr run --rm
#   nerdctl version | --version
# Precedence as in nerdctl: flags, then CONTAINERD_ADDRESS/CONTAINERD_NAMESPACE,
# then the toml ($NERDCTL_TOML, default /etc/nerdctl/nerdctl.toml), then the
# defaults (/run/containerd/containerd.sock, namespace default).
set -u
# The ctr the stand-in k3s unpacked (it carries its runtime, as K3s does).
REAL_CTR=${EDGEIMG_STANDIN_CTR:-${EDGEIMG_STANDIN_PREFIX:-}/var/lib/rancher/k3s/data/edgeimg-standin/bin/ctr}
TOML=${NERDCTL_TOML:-/etc/nerdctl/nerdctl.toml}
LABEL='edgeimg stand-in nerdctl (NOT nerdctl)'

die() { printf '%s: %s\n' "$LABEL" "$*" >&2; exit 1; }

toml_value() { # top-level `key = "value"` of the toml
    [ -r "$TOML" ] || return 0
    awk -v k="$1" '
        /^[[:space:]]*\[/ { exit }
        { line = $0; sub(/#.*/, "", line) }
        line ~ "^[[:space:]]*" k "[[:space:]]*=" {
            sub(/^[^=]*=[[:space:]]*/, "", line); sub(/[[:space:]]*$/, "", line)
            gsub(/^"|"$/, "", line); print line; exit
        }' "$TOML"
}

address=$(toml_value address)
namespace=$(toml_value namespace)
address=${CONTAINERD_ADDRESS:-${address:-/run/containerd/containerd.sock}}
namespace=${CONTAINERD_NAMESPACE:-${namespace:-default}}

while [ $# -gt 0 ]; do
    case $1 in
        -a|-H|--address|--host) address=${2:-}; shift 2 ;;
        --address=*|--host=*) address=${1#*=}; shift ;;
        -n|--namespace) namespace=${2:-}; shift 2 ;;
        --namespace=*) namespace=${1#*=}; shift ;;
        --debug|--debug-full) shift ;;
        *) break ;;
    esac
done
address=${address#unix://}

ctr_() { exec "$REAL_CTR" -a "$address" -n "$namespace" "$@"; }

# docker.io/library/busybox:latest from busybox, docker.io/x/y:latest from x/y.
normalize() {
    r=$1
    case ${r%%/*} in
        *.*|*:*|localhost) [ "${r#*/}" != "$r" ] || r=docker.io/library/$r ;;
        *) case $r in */*) r=docker.io/$r ;; *) r=docker.io/library/$r ;; esac ;;
    esac
    case ${r##*/} in *:*|*@*) ;; *) r=$r:latest ;; esac
    printf '%s' "$r"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    images|image)
        [ "$cmd" = image ] && { [ "${1:-}" = ls ] || [ "${1:-}" = list ]; } && shift
        ctr_ images ls "$@" ;;
    ps|container)
        [ "$cmd" = container ] && { [ "${1:-}" = ls ] || [ "${1:-}" = list ]; } && shift
        [ "${1:-}" = -a ] && shift
        ctr_ containers ls "$@" ;;
    run)
        rm_=no name=''
        while [ $# -gt 0 ]; do
            case $1 in
                --rm) rm_=yes ;;
                --name) name=${2:-}; shift ;;
                --name=*) name=${1#*=} ;;
                -i|-t|-it|-ti|--interactive|--tty) ;;
                -*) die "run: option $1 is not supported by the stand-in" ;;
                *) break ;;
            esac
            shift
        done
        [ $# -gt 0 ] || die "run: no image"
        [ "$rm_" = yes ] || die "run: the stand-in only supports run --rm"
        image=$(normalize "$1"); shift
        [ -n "$name" ] || name=standin-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
        ctr_ run --rm "$image" "$name" "$@" ;;
    version|--version|-v)
        echo "nerdctl version 2.1.6-standin ($LABEL)"
        echo "address $address, namespace $namespace" ;;
    info)
        echo "$LABEL"; echo "address: unix://$address"; echo "namespace: $namespace" ;;
    build|builder)
        die "$cmd: the stand-in cannot build images (no BuildKit client)" ;;
    *)
        die "${cmd:-(no command)}: not supported by the stand-in (images, ps, run --rm, version, info)" ;;
esac
