//! The CRD: generated YAML up to date, schema and CEL rules refusing what cannot work.
