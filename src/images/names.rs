//! Image reference names: what "fully qualified" means and the normalisation
//! Docker/containerd apply to short names (`busybox` -> `docker.io/library/busybox:latest`).

struct Parts<'a> {
    domain: Option<&'a str>,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

fn split(name: &str) -> Parts<'_> {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    // A tag is a ':' after the last '/' (a ':' before it is a registry port).
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (rest, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let (domain, path) = match rest.split_once('/') {
        Some((first, p)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (Some(first), p)
        }
        _ => (None, rest),
    };
    Parts {
        domain,
        path,
        tag,
        digest,
    }
}

fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        })
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && t.as_bytes()[0] != b'.'
        && t.as_bytes()[0] != b'-'
}

fn valid_digest(d: &str) -> bool {
    match d.split_once(':') {
        Some(("sha256", hex)) => {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        }
        Some((alg, hex)) => !alg.is_empty() && !hex.is_empty(),
        None => false,
    }
}

/// Whether `name` is a fully qualified image reference: a registry host (with a
/// dot, a port or `localhost`), a repository, and a tag or digest; e.g.
/// `docker.io/library/busybox:1.36`, `registry.local:5000/app@sha256:…`.
/// Docker Hub names must carry their implicit `library/` (`docker.io/busybox`
/// is not what a pod's `busybox` normalises to).
pub fn is_fully_qualified(name: &str) -> bool {
    let p = split(name);
    let Some(domain) = p.domain else { return false };
    if p.tag.is_none() && p.digest.is_none() {
        return false;
    }
    if p.tag.is_some_and(|t| !valid_tag(t)) || p.digest.is_some_and(|d| !valid_digest(d)) {
        return false;
    }
    if matches!(domain, "docker.io" | "index.docker.io") && !p.path.contains('/') {
        return false;
    }
    if domain == "index.docker.io" {
        return false;
    }
    valid_path(p.path)
}

/// The fully qualified form of `name` as Docker and containerd normalise it:
/// `busybox` -> `docker.io/library/busybox:latest`,
/// `user/app:1` -> `docker.io/user/app:1`.
pub fn normalize_reference(name: &str) -> String {
    let p = split(name);
    let domain = match p.domain {
        None | Some("index.docker.io") => "docker.io",
        Some(d) => d,
    };
    let mut out = String::from(domain);
    out.push('/');
    if domain == "docker.io" && !p.path.contains('/') {
        out.push_str("library/");
    }
    out.push_str(p.path);
    if let Some(t) = p.tag {
        out.push(':');
        out.push_str(t);
    }
    if let Some(d) = p.digest {
        out.push('@');
        out.push_str(d);
    }
    if p.tag.is_none() && p.digest.is_none() {
        out.push_str(":latest");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified() {
        for n in [
            "docker.io/library/busybox:1.36",
            "registry.local:5000/team/app:v1",
            "localhost/app:dev",
            "localhost:5000/app:dev",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "quay.io/org/app:1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_fully_qualified(n), "{n}");
        }
        for n in [
            "busybox",
            "busybox:latest",
            "library/busybox:1",
            "docker.io/library/busybox",
            "docker.io/busybox:1.36",
            "latest",
            "1.36",
            "registry.local:5000/app",
            "Docker.io/library/Busybox:1",
            "ghcr.io/org/app@sha256:short",
        ] {
            assert!(!is_fully_qualified(n), "{n}");
        }
    }

    #[test]
    fn normalize() {
        assert_eq!(
            normalize_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_reference("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize_reference("user/app:1"), "docker.io/user/app:1");
        assert_eq!(
            normalize_reference("docker.io/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(
            normalize_reference("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_reference("ghcr.io/a/b:2"), "ghcr.io/a/b:2");
    }
}
