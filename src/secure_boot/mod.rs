//! UEFI Secure Boot with the operator's own keys (docs/trusted-boot.md).
//!
//! [`keys`]: `edgeimg keygen --secure-boot`, the fleet's PK/KEK/db
//! hierarchy and the signed signature lists a firmware in setup mode enrolls.

pub mod keys;

use crate::cmd::Tool;

pub const OPENSSL: Tool = Tool {
    name: "openssl",
    package: "openssl",
    purpose: "make the Secure Boot keys and certificates (keygen --secure-boot)",
};
pub const CERT_TO_EFI_SIG_LIST: Tool = Tool {
    name: "cert-to-efi-sig-list",
    package: "efitools",
    purpose: "wrap Secure Boot certificates as EFI signature lists",
};
pub const SIGN_EFI_SIG_LIST: Tool = Tool {
    name: "sign-efi-sig-list",
    package: "efitools",
    purpose: "sign the PK/KEK/db lists a firmware in setup mode enrolls",
};

/// The tools `keygen --secure-boot` runs (doctor lists them too).
pub const KEYGEN_TOOLS: &[Tool] = &[OPENSSL, CERT_TO_EFI_SIG_LIST, SIGN_EFI_SIG_LIST];
