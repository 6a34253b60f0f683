//! [`Operation`]: an API operation, named for counting and tied to the quota it draws on.

use crate::limiter::QuotaClass;

/// An API operation a [`Source`](crate::Source) calls through
/// [`CallContext::call`](crate::CallContext::call): its name (counted in
/// [`Stats::calls`](crate::Stats::calls)) and the quota it draws on, if any, whose rate limit every
/// attempt goes through.
///
/// ```
/// use lambda_secrets::{Operation, QuotaClass};
///
/// const READ: Operation = Operation::new("MyStoreRead");
/// const SSM_READ: Operation = Operation::new("GetParameter").with_quota(QuotaClass::SsmGet);
/// assert_eq!((READ.name(), READ.quota()), ("MyStoreRead", None));
/// assert_eq!(SSM_READ.quota(), Some(QuotaClass::SsmGet));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operation {
    name: &'static str,
    quota: Option<QuotaClass>,
}

impl Operation {
    /// An operation without a quota of this crate's (no rate limit is applied).
    ///
    /// ```
    /// const READ: lambda_secrets::Operation = lambda_secrets::Operation::new("MyStoreRead");
    /// assert_eq!(READ.quota(), None);
    /// ```
    pub const fn new(name: &'static str) -> Self {
        Operation { name, quota: None }
    }

    /// The same operation, drawing on `class`'s rate limit.
    ///
    /// ```
    /// use lambda_secrets::{Operation, QuotaClass};
    /// const GET: Operation = Operation::new("GetParameter").with_quota(QuotaClass::SsmGet);
    /// assert_eq!(GET.quota(), Some(QuotaClass::SsmGet));
    /// ```
    pub const fn with_quota(self, class: QuotaClass) -> Self {
        Operation {
            name: self.name,
            quota: Some(class),
        }
    }

    /// Its name, as counted in [`Stats::calls`](crate::Stats::calls).
    ///
    /// ```
    /// assert_eq!(lambda_secrets::Operation::new("MyStoreRead").name(), "MyStoreRead");
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The quota it draws on.
    ///
    /// ```
    /// use lambda_secrets::{Operation, QuotaClass};
    /// assert_eq!(Operation::new("Decrypt").with_quota(QuotaClass::KmsDecrypt).quota(), Some(QuotaClass::KmsDecrypt));
    /// ```
    pub const fn quota(&self) -> Option<QuotaClass> {
        self.quota
    }
}
