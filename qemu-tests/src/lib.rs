//! Shared harness for the VM tests (see tests/).
