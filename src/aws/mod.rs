//! AWS conventions, one implementation for every AWS path: the standard credential chain and
//! region (`credentials`), and SigV4 signing with the aws-sigv4 crate (`sigv4`). Secrets and
//! session tokens never appear in logs, errors or reports.

pub mod credentials;
pub mod endpoint;
pub mod iot;
pub mod json;
pub mod sigv4;
