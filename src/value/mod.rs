//! [`SecretValue`]: the bytes of a loaded secret, zeroized on drop and redacted when printed.

pub(crate) mod json;

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// The plaintext of one loaded value.
///
/// The bytes live in one heap allocation that is overwritten with zeros when the last clone is
/// dropped. `Debug` and `Display` print `[REDACTED]`; the bytes are reachable only through the
/// explicit [`expose_str`](Self::expose_str) / [`expose_bytes`](Self::expose_bytes) calls, so a
/// secret cannot reach a log line by accident. Cloning is cheap (a reference count).
///
/// ```
/// use lambda_secrets::SecretValue;
///
/// let value = SecretValue::from("hunter2");
/// assert_eq!(format!("{value:?}"), "SecretValue([REDACTED])");
/// assert_eq!(value.to_string(), "[REDACTED]");
/// assert_eq!(value.expose_str(), Some("hunter2"));
/// assert_eq!(value.len(), 7);
/// ```
#[derive(Clone)]
pub struct SecretValue {
    inner: Arc<Inner>,
}

/// UTF-8 is checked once, when the value is made: text reads never check again.
enum Inner {
    Text(Zeroizing<Box<str>>),
    Binary(Zeroizing<Box<[u8]>>),
}

impl SecretValue {
    /// Takes ownership of `bytes`; no copy of them is left behind.
    ///
    /// ```
    /// let value = lambda_secrets::SecretValue::new(b"key material".to_vec());
    /// assert_eq!(value.len(), 12);
    /// ```
    pub fn new(bytes: Vec<u8>) -> Self {
        // `into_boxed_slice` may reallocate when capacity > len, which would leave the old
        // buffer unzeroized: shrink by hand into a zeroized copy in that case.
        let boxed = if bytes.capacity() == bytes.len() {
            bytes.into_boxed_slice()
        } else {
            let mut bytes = Zeroizing::new(bytes);
            let copy: Box<[u8]> = bytes.as_slice().into();
            bytes.clear();
            copy
        };
        // Neither conversion reallocates: a boxed slice's capacity is its length.
        let inner = match String::from_utf8(boxed.into_vec()) {
            Ok(text) => Inner::Text(Zeroizing::new(text.into_boxed_str())),
            Err(binary) => Inner::Binary(Zeroizing::new(binary.into_bytes().into_boxed_slice())),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The value as UTF-8 text, or `None` when it is not valid UTF-8 (binary data).
    ///
    /// ```
    /// use lambda_secrets::SecretValue;
    /// assert_eq!(SecretValue::from("pw").expose_str(), Some("pw"));
    /// assert_eq!(SecretValue::from(vec![0xff]).expose_str(), None);
    /// ```
    #[inline]
    pub fn expose_str(&self) -> Option<&str> {
        match &*self.inner {
            Inner::Text(text) => Some(text),
            Inner::Binary(_) => None,
        }
    }

    /// The raw bytes of the value.
    ///
    /// ```
    /// use lambda_secrets::SecretValue;
    /// assert_eq!(SecretValue::from("pw").expose_bytes(), b"pw");
    /// ```
    #[inline]
    pub fn expose_bytes(&self) -> &[u8] {
        match &*self.inner {
            Inner::Text(text) => text.as_bytes(),
            Inner::Binary(bytes) => bytes,
        }
    }

    /// The items of an SSM `StringList` (comma-separated), or `None` when not UTF-8.
    ///
    /// ```
    /// use lambda_secrets::SecretValue;
    /// let list = SecretValue::from("a,b,c");
    /// assert_eq!(list.expose_list().unwrap(), vec!["a", "b", "c"]);
    /// ```
    pub fn expose_list(&self) -> Option<Vec<&str>> {
        self.expose_str().map(|s| s.split(',').collect())
    }

    /// Length in bytes (safe to log).
    ///
    /// ```
    /// assert_eq!(lambda_secrets::SecretValue::from("pw").len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.expose_bytes().len()
    }

    /// Whether the value is empty.
    ///
    /// ```
    /// assert!(lambda_secrets::SecretValue::from("").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.expose_bytes().is_empty()
    }
}

impl SecretValue {
    /// Watches the bytes without keeping them: tells whether some clone still holds them.
    pub(crate) fn watch(&self) -> ValueWatch {
        ValueWatch(Arc::downgrade(&self.inner))
    }
}

/// Whether any clone of a [`SecretValue`] still holds its bytes (they are zeroized when none does).
pub(crate) struct ValueWatch(std::sync::Weak<Inner>);

impl ValueWatch {
    pub(crate) fn is_held(&self) -> bool {
        self.0.strong_count() > 0
    }

    /// Whether `value` is (a clone of) the value watched. The watch keeps the allocation, so
    /// another value is never found at its address.
    #[cfg_attr(not(feature = "feature-flags"), allow(dead_code))]
    pub(crate) fn is(&self, value: &SecretValue) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(&value.inner))
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        Self::new(s.into_bytes())
    }
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        Self::new(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for SecretValue {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl PartialEq for SecretValue {
    /// Constant-time in the length of the shorter value.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.expose_bytes(), other.expose_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for SecretValue {}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_in_debug_and_display() {
        let v = SecretValue::from("s3cr3t-value");
        assert!(!format!("{v:?}").contains("s3cr3t"));
        assert!(!format!("{v:#?}").contains("s3cr3t"));
        assert!(!format!("{v}").contains("s3cr3t"));
        assert_eq!(v.expose_bytes(), b"s3cr3t-value");
    }

    #[test]
    fn binary_values_have_no_str() {
        let v = SecretValue::from(vec![0xff, 0xfe, 0x00]);
        assert_eq!(v.expose_str(), None);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn equality_compares_bytes() {
        assert_eq!(SecretValue::from("a"), SecretValue::from("a"));
        assert_ne!(SecretValue::from("a"), SecretValue::from("b"));
        assert_ne!(SecretValue::from("a"), SecretValue::from("ab"));
    }

    #[test]
    fn spare_capacity_is_not_kept() {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(b"abc");
        let v = SecretValue::new(bytes);
        assert_eq!(v.expose_str(), Some("abc"));
    }
}
