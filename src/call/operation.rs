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
    pub const fn new(name: &'static str) -> Self {
        Operation { name, quota: None }
    }

    /// The same operation, drawing on `class`'s rate limit.
    pub const fn with_quota(self, class: QuotaClass) -> Self {
        Operation {
            name: self.name,
            quota: Some(class),
        }
    }

    /// Its name, as counted in [`Stats::calls`](crate::Stats::calls).
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The quota it draws on.
    pub const fn quota(&self) -> Option<QuotaClass> {
        self.quota
    }
}
