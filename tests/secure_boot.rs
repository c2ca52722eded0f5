//! `edgeimg keygen --secure-boot`: the files, their modes, and that each
//! `.auth` is signed by the key the firmware will check it against (verified
//! with openssl over the bytes UEFI signs for an authenticated variable).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{edgeimg, ok, run};

/// EFI_GLOBAL_VARIABLE (PK, KEK) and EFI_IMAGE_SECURITY_DATABASE_GUID (db),
/// in their on-disk (mixed-endian) byte order.
fn vendor_guid(var: &str) -> [u8; 16] {
    let text = if var == "db" {
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
    } else {
        "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    };
    guid_bytes(text)
}

fn guid_bytes(text: &str) -> [u8; 16] {
    let h: Vec<u8> = hex::decode(text.replace('-', "")).unwrap();
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&[h[3], h[2], h[1], h[0]]);
    b[4..6].copy_from_slice(&[h[5], h[4]]);
    b[6..8].copy_from_slice(&[h[7], h[6]]);
    b[8..].copy_from_slice(&h[8..]);
    b
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 128 {
        return vec![n as u8];
    }
    let b: Vec<u8> = n
        .to_be_bytes()
        .into_iter()
        .skip_while(|&x| x == 0)
        .collect();
    let mut v = vec![0x80 | b.len() as u8];
    v.extend(b);
    v
}

/// Checks `auth` (EFI_VARIABLE_AUTHENTICATION_2 + the list) against the
/// certificate `signer`: openssl's verdict on the PKCS#7 signature over
/// name || vendor GUID || attributes || timestamp || list.
fn signed_by(dir: &Path, var: &str, auth: &[u8], signer: &Path) -> bool {
    let time = &auth[..16];
    let len = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
    assert_eq!(&auth[20..22], &[0x00, 0x02], "WIN_CERT revision");
    assert_eq!(&auth[22..24], &[0xf1, 0x0e], "WIN_CERT_TYPE_EFI_GUID");
    let signed_data = &auth[40..16 + len];
    let list = &auth[16 + len..];
    // sign-efi-sig-list stores a bare SignedData; openssl wants it wrapped
    // in a ContentInfo (OID pkcs7-signedData, [0] EXPLICIT).
    let mut body = hex::decode("06092a864886f70d010702").unwrap();
    body.push(0xa0);
    body.extend(der_len(signed_data.len()));
    body.extend(signed_data);
    let mut ci = vec![0x30];
    ci.extend(der_len(body.len()));
    ci.extend(body);
    let mut content: Vec<u8> = var.encode_utf16().flat_map(u16::to_le_bytes).collect();
    content.extend(vendor_guid(var));
    // NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS |
    // TIME_BASED_AUTHENTICATED_WRITE_ACCESS
    content.extend(0x27u32.to_le_bytes());
    content.extend(time);
    content.extend(list);
    let (sig, data) = (dir.join("sig.der"), dir.join("signed.bin"));
    std::fs::write(&sig, ci).unwrap();
    std::fs::write(&data, content).unwrap();
    run(Command::new("openssl")
        .args([
            "smime",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-nointern",
            "-noverify",
        ])
        .arg("-in")
        .arg(&sig)
        .arg("-content")
        .arg(&data)
        .arg("-certfile")
        .arg(signer)
        .args(["-out", "/dev/null"]))
    .status
    .success()
}

#[test]
fn keygen_secure_boot_makes_an_enrollable_hierarchy_and_never_overwrites() {
    let base = tempfile::tempdir().unwrap();
    // The directory is made (private) when it does not exist.
    let keys = base.path().join("keys");
    let prefix = keys.join("fleet");
    let out = ok(edgeimg()
        .args(["keygen", "--secure-boot", "--name", "Acme edge", "--out"])
        .arg(&prefix));
    let printed: Vec<&str> = out.lines().collect();
    assert_eq!(printed.len(), 13, "{out}");
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "keys directory mode {mode:o}");
    let f = |tail: &str| keys.join(format!("fleet-{tail}"));
    for p in &printed {
        assert!(Path::new(p).is_file(), "{p}");
    }
    // Only the final names: the private work directory is gone.
    let mut names: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 13, "{names:?}");

    let guid = std::fs::read_to_string(f("owner.guid")).unwrap();
    let guid = guid.trim();
    for role in ["PK", "KEK", "db"] {
        let mode = std::fs::metadata(f(&format!("{role}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{role}.key mode {mode:o}");
        let subject = ok(Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(f(&format!("{role}.crt"))));
        assert!(subject.contains(&format!("Acme edge {role}")), "{subject}");
        // The list holds one X.509 entry (EFI_CERT_X509_GUID) owned by the
        // fleet's GUID, and the certificate's DER.
        let esl = std::fs::read(f(&format!("{role}.esl"))).unwrap();
        assert_eq!(
            &esl[..16],
            &guid_bytes("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
        );
        assert_eq!(&esl[28..44], &guid_bytes(guid), "{role} owner");
        let der_path = base.path().join("cert.der");
        ok(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(f(&format!("{role}.crt")))
            .arg("-out")
            .arg(&der_path));
        assert_eq!(
            &esl[44..],
            &std::fs::read(&der_path).unwrap()[..],
            "{role} list"
        );
        // The .auth carries the same list after its signature.
        let auth = std::fs::read(f(&format!("{role}.auth"))).unwrap();
        assert!(auth.ends_with(&esl), "{role}.auth");
    }

    let work = tempfile::tempdir().unwrap();
    let auth = |r: &str| std::fs::read(f(&format!("{r}.auth"))).unwrap();
    assert!(signed_by(work.path(), "PK", &auth("PK"), &f("PK.crt")));
    assert!(signed_by(work.path(), "KEK", &auth("KEK"), &f("PK.crt")));
    assert!(signed_by(work.path(), "db", &auth("db"), &f("KEK.crt")));
    // The check can fail: db is not signed by PK, and a changed list is not
    // what KEK signed.
    assert!(!signed_by(work.path(), "db", &auth("db"), &f("PK.crt")));
    let mut tampered = auth("db");
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(!signed_by(work.path(), "db", &tampered, &f("KEK.crt")));

    // A second run refuses and changes nothing.
    let before = std::fs::read(f("db.key")).unwrap();
    let o = run(edgeimg()
        .args(["keygen", "--secure-boot", "--out"])
        .arg(&prefix));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fleet-PK.key already exists"), "{err}");
    assert_eq!(std::fs::read(f("db.key")).unwrap(), before);
}

#[test]
fn keygen_secure_boot_refuses_a_name_openssl_would_misread() {
    let t = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["keygen", "--secure-boot", "--name", "a/CN=b", "--out"])
        .arg(t.path().join("k")));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--name \"a/CN=b\""), "{err}");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
}
