//! Parsing a store destination URL (`s3://bucket/prefix`, `gs://…`, `az://…`,
//! `file:///dir`). Pure: nothing here touches the network or the disk.

use std::fmt;
use std::path::PathBuf;

/// The kind of object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Amazon S3 or an S3-compatible store.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A local (or mounted) directory.
    File,
}

impl Scheme {
    /// The URL scheme, as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Gcs => "gs",
            Self::Azure => "az",
            Self::File => "file",
        }
    }
}

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The store kind.
    pub scheme: Scheme,
    /// Bucket (S3, GCS) or container (Azure); empty for `file`.
    pub bucket: String,
    /// Path inside the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// The directory of a `file://` destination.
    pub dir: Option<PathBuf>,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.dir, self.prefix.is_empty()) {
            (Some(dir), _) => write!(f, "file://{}", dir.display()),
            (None, true) => write!(f, "{}://{}", self.scheme.as_str(), self.bucket),
            (None, false) => write!(f, "{}://{}/{}", self.scheme.as_str(), self.bucket, self.prefix),
        }
    }
}

/// Why a destination is not acceptable: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

fn err(message: impl Into<String>, hint: impl Into<String>) -> DestinationError {
    DestinationError { message: message.into(), hint: hint.into() }
}

const FORMS: &str = "use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or file:///ABSOLUTE/DIR";

/// Parses `value`.
pub fn parse(value: &str) -> Result<Destination, DestinationError> {
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(err(format!("{value:?} is not a URL"), FORMS));
    };
    let scheme = match scheme {
        "s3" | "s3a" => Scheme::S3,
        "gs" | "gcs" => Scheme::Gcs,
        "az" | "azure" | "abfs" => Scheme::Azure,
        "file" => Scheme::File,
        "http" | "https" => {
            return Err(err(
                format!("{value:?} is an endpoint, not a destination"),
                "write s3://BUCKET/PREFIX as the destination and put the endpoint in s3.endpoint",
            ));
        }
        other => return Err(err(format!("unknown scheme {other:?}"), FORMS)),
    };
    if value.contains(['?', '#']) || value.chars().any(char::is_whitespace) {
        return Err(err(
            format!("{value:?} holds a query, fragment or space"),
            "credentials and options go in their own fields, not in the URL",
        ));
    }
    if scheme == Scheme::File {
        if !rest.starts_with('/') {
            return Err(err(format!("{value:?} has no absolute path"), "use file:///ABSOLUTE/DIR (three slashes)"));
        }
        let dir = PathBuf::from(rest.trim_end_matches('/'));
        if dir.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(err(format!("{value:?} contains '..'"), "use a plain absolute path"));
        }
        return Ok(Destination { scheme, bucket: String::new(), prefix: String::new(), dir: Some(dir) });
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if !is_bucket_name(bucket) {
        return Err(err(
            format!("{bucket:?} is not a valid bucket or container name"),
            "bucket names are 3 to 63 lower-case letters, digits, '.' and '-'",
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        return Err(err(
            format!("the path {prefix:?} has empty, '.' or '..' parts"),
            "use a plain path like backups/prod",
        ));
    }
    Ok(Destination { scheme, bucket: bucket.into(), prefix: prefix.into(), dir: None })
}

fn is_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn s3_with_and_without_prefix() {
        let d = parse("s3://my-bucket/backups/prod/").unwrap();
        assert_eq!((d.scheme, d.bucket.as_str(), d.prefix.as_str()), (Scheme::S3, "my-bucket", "backups/prod"));
        assert_eq!(d.to_string(), "s3://my-bucket/backups/prod");
        let d = parse("s3://my-bucket").unwrap();
        assert_eq!(d.prefix, "");
    }

    #[test]
    fn gcs_azure_and_file() {
        assert_eq!(parse("gs://b-1/x").unwrap().scheme, Scheme::Gcs);
        assert_eq!(parse("az://container/x").unwrap().scheme, Scheme::Azure);
        let d = parse("file:///var/backups/").unwrap();
        assert_eq!(d.dir, Some(PathBuf::from("/var/backups")));
        assert_eq!(d.to_string(), "file:///var/backups");
    }

    #[test]
    fn bad_destinations_say_how_to_fix_them() {
        let cases = [
            ("backups", "not a URL"),
            ("ftp://x/y", "unknown scheme"),
            ("https://minio:9000/bucket", "s3.endpoint"),
            ("file://relative/dir", "three slashes"),
            ("s3://B/x", "bucket names"),
            ("s3:///x", "bucket names"),
            ("s3://bucket/a/../b", "'..'"),
            ("s3://bucket/x?secret=1", "own fields"),
            ("file:///a/../b", "'..'"),
        ];
        for (value, expect) in cases {
            let e = parse(value).unwrap_err();
            let text = format!("{} ({})", e.message, e.hint);
            assert!(text.contains(expect), "{value}: {text}");
        }
    }
}
