pub mod broker;
pub mod pki;
