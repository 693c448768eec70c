//! Accounts, SSH keys, HTTP Signature verification and presigned URLs (see issue: front door).
