//! UEFI Secure Boot with the operator's own keys (docs/trusted-boot.md).
//!
//! [`keys`]: `edgeimg keygen --secure-boot`, the fleet's PK/KEK/db
//! hierarchy and the signed signature lists a firmware in setup mode enrolls.

pub mod keys;
pub mod sign;
pub mod uki;
