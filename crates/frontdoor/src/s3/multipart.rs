//! Multipart uploads: create, upload part, upload part copy, list parts, list uploads,
//! complete, abort.
//!
//! Creating an upload chooses its storage nodes (as a PUT would, over failure domains) and
//! records them; every part is streamed to exactly those nodes ([`crate::data::store_on`])
//! under its own object id, and recorded in one transaction with a rewrite of the unchanged
//! upload record conditional on its etag, so no part is ever added to an upload that has
//! ended. Completing checks the list (ascending part numbers, known parts with matching
//! ETags, every part but the last at least 5 MiB), asks each node to join the parts into the
//! new object's file (`POST /mpu/commit` on the storage node; the bytes do not cross the
//! network again), and then, in one Moray transaction, writes the object record, removes the
//! upload record (conditional on its etag: an upload ends once) and every part record (their
//! files are logged for GC). The ETag is S3's: the hex MD5 of the parts' binary MD5s, `-N`.
//!
//! Joins of more than [`KEEPALIVE_ABOVE`] bytes answer 200 at once and send whitespace until
//! the result (or an error document) is ready, as S3 does, so clients do not time out.
//!
//! Uploads are never expired on their own: abort them (or delete the bucket) to reclaim
//! their parts.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use manta_types::record::{EntryKind, ObjectInfo, PartSizes};
use manta_types::{MetadataRecord, ObjectId};
use md5::Digest as _;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};
use storage_api::ByteRange;

use super::buckets::owner as owner_el;
use super::conditional::{WriteCondition, timestamp};
use super::error::{
    S3Result, from_manta, internal, invalid_argument, no_such_upload, s3err, unavailable,
};
use super::list::rollup;
use super::meta::{BucketRecord, Meta, S3_RECORD_VERSION, UPLOAD_TYPE, UploadRecord, Versioned};
use super::names;
use super::objects::{
    body_length, body_stream, commit_record, commit_unless_failed, content_md5_of,
    copy_source_conditions, md5_hex, new_object_headers, object_of, object_write_condition, place,
    read_source,
};
use super::service::{MAX_OBJECT_SIZE, S3Api, bucket_of, caller};
use crate::api::headers::BodyLength;
use crate::data::{self, ObjectMeta, Place, Stored, Uncommitted};

/// Smallest part but the last, as S3.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Free space a node must have to be chosen for an upload (its size is not known yet).
pub const PLACEMENT_ESTIMATE: u64 = 64 * 1024 * 1024;

/// Completions joining more bytes than this keep the connection alive while they run.
pub const KEEPALIVE_ABOVE: u64 = 64 * 1024 * 1024;

/// Reads an upload of `key` in `bucket`.
async fn load(
    api: &S3Api,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> S3Result<Versioned<UploadRecord>> {
    api.meta
        .upload(bucket, upload_id)
        .await?
        .filter(|u| u.rec.name == key)
        .ok_or_else(|| no_such_upload(upload_id))
}

/// `CreateMultipartUpload`.
///
/// # Errors
/// `InsufficientStorage` when no set of nodes has room; `MetadataTooLarge`; Moray failures.
pub async fn create(
    api: &S3Api,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let acct = caller(&req)?.clone();
    bucket_of(&req, &req.input.bucket)?;
    let i = req.input;
    names::check_key(&i.key)?;
    let (content_type, headers) = new_object_headers!(i)?;
    let fd = &api.fd;
    fd.picker
        .ensure_loaded()
        .await
        .map_err(|e| unavailable(format!("storage heartbeats: {e}")))?;
    let nodes = fd
        .picker
        .choose(
            fd.cfg.default_copies as usize,
            PLACEMENT_ESTIMATE,
            &HashSet::new(),
        )
        .map_err(from_manta)?;
    let upload_id = names::new_upload_id();
    let rec = UploadRecord {
        version: S3_RECORD_VERSION,
        kind: UPLOAD_TYPE.into(),
        bucket: i.bucket.clone(),
        dirname: i.bucket.clone(),
        name: i.key.clone(),
        upload_id: upload_id.clone(),
        owner: acct.uuid.clone(),
        owner_login: acct.login.clone(),
        initiated: manta_types::time::now_ms(),
        sharks: nodes.iter().map(crate::picker::Node::shark_ref).collect(),
        content_type,
        headers,
    };
    api.meta.create_upload(&rec).await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(upload_id),
        ..CreateMultipartUploadOutput::default()
    }))
}

/// Stores a part's bytes on the upload's nodes and records it.
async fn store_part(
    api: &S3Api,
    upload: &Versioned<UploadRecord>,
    part: u32,
    len: BodyLength,
    md5: Option<&str>,
    body: impl data::UploadBody,
) -> S3Result<MetadataRecord> {
    let u = &upload.rec;
    let nodes = data::nodes_of(&api.fd, &u.sharks)
        .await
        .map_err(from_manta)?;
    let bytes = data::store_on(&api.fd, &nodes, &u.owner, len, md5, body)
        .await
        .map_err(from_manta)?;
    let place = Place {
        dirname: names::upload_key(&u.bucket, &u.upload_id),
        key: names::part_key(&u.bucket, &u.upload_id, part),
        name: names::part_name(part),
    };
    let meta = ObjectMeta {
        etag: md5_hex(&bytes.stored().md5),
        content_type: "application/octet-stream".into(),
        headers: BTreeMap::new(),
    };
    let rec = bytes.record(place, meta);
    let write = api.meta.put_part(upload, &rec, part);
    commit_unless_failed(bytes, write, || no_such_upload(&u.upload_id)).await?;
    Ok(rec)
}

/// `UploadPart`.
///
/// # Errors
/// `NoSuchUpload`, `InvalidArgument` (part number), `BadDigest`, `EntityTooLarge`,
/// `ServiceUnavailable` when one of the upload's nodes is down.
pub async fn upload_part(
    api: &S3Api,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    bucket_of(&req, &req.input.bucket)?;
    let md5 = content_md5_of(&req.headers)?;
    let declared = super::service::declared_length(&req, req.input.content_length);
    let i = req.input;
    let part = names::check_part_number(i.part_number)?;
    let upload = load(api, &i.bucket, &i.key, &i.upload_id).await?;
    let len = body_length(declared, MAX_OBJECT_SIZE)?;
    let rec = store_part(api, &upload, part, len, md5.as_deref(), body_stream(i.body)).await?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(object_of(&rec)?.etag.clone())),
        ..UploadPartOutput::default()
    }))
}

/// `UploadPartCopy`: a part made from (a range of) an object of the caller's.
///
/// # Errors
/// `NoSuchUpload`, `NoSuchKey`, `AccessDenied`, `PreconditionFailed`, `InvalidArgument`
/// (malformed range), `InvalidRange` (outside the source).
pub async fn upload_part_copy(
    api: &S3Api,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let signer = super::service::signer(&req)?.clone();
    bucket_of(&req, &req.input.bucket)?;
    let i = req.input;
    let part = names::check_part_number(i.part_number)?;
    let upload = load(api, &i.bucket, &i.key, &i.upload_id).await?;
    let cond = copy_source_conditions!(i);
    let expected = i.expected_source_bucket_owner.as_deref();
    let src = read_source(api, &signer, &i.copy_source, expected, &cond).await?;
    let so = object_of(&src.rec)?.clone();
    let span = match i.copy_source_range.as_deref() {
        None => 0..so.content_length,
        Some(r) => {
            let parsed = Range::parse(r).map_err(|_| {
                invalid_argument(
                    "The x-amz-copy-source-range value must be of the form bytes=first-last",
                )
            })?;
            let Range::Int {
                first,
                last: Some(last),
            } = parsed
            else {
                return Err(invalid_argument(
                    "The x-amz-copy-source-range value must be of the form bytes=first-last",
                ));
            };
            if last >= so.content_length {
                return Err(s3err(
                    S3ErrorCode::InvalidRange,
                    format!(
                        "Range specified is not valid for source object of size: {}",
                        so.content_length
                    ),
                ));
            }
            first..last + 1
        }
    };
    let len = span.end - span.start;
    if len > MAX_OBJECT_SIZE {
        return Err(s3err(
            S3ErrorCode::EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size.",
        ));
    }
    let exact = BodyLength {
        exact: Some(len),
        max: None,
    };
    let rec = if len == 0 {
        store_part(
            api,
            &upload,
            part,
            exact,
            None,
            futures_util::stream::empty::<Result<Bytes, std::io::Error>>(),
        )
        .await?
    } else {
        let whole = span.start == 0 && len == so.content_length;
        let range = (!whole).then_some(ByteRange::FromTo(span.start, span.end - 1));
        let (_, _, stream) = data::fetch(&api.fd, &so, &src.rec.creator, range)
            .await
            .map_err(from_manta)?;
        let md5 = whole.then_some(so.content_md5.as_str());
        store_part(api, &upload, part, exact, md5, stream).await?
    };
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(object_of(&rec)?.etag.clone())),
            last_modified: Some(timestamp(rec.mtime)),
            ..CopyPartResult::default()
        }),
        ..UploadPartCopyOutput::default()
    }))
}

/// The part number of a part record.
fn number_of(rec: &MetadataRecord) -> u32 {
    rec.name.parse().unwrap_or(0)
}

/// `ListParts`.
///
/// # Errors
/// `NoSuchUpload`, `InvalidArgument` for bad markers or sizes.
pub async fn list_parts(
    api: &S3Api,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    bucket_of(&req, &req.input.bucket)?;
    let i = &req.input;
    let upload = load(api, &i.bucket, &i.key, &i.upload_id).await?;
    let marker = match i.part_number_marker {
        None => 0,
        Some(n) if n < 0 => return Err(invalid_argument("part-number-marker must be >= 0")),
        Some(n) => n.unsigned_abs(),
    };
    let max = match i.max_parts {
        None => 1000,
        Some(n) if n < 0 => return Err(invalid_argument("max-parts must be >= 0")),
        Some(n) => n.min(1000) as usize,
    };
    let all = api.meta.parts(&i.bucket, &i.upload_id).await?;
    let mut after: Vec<&MetadataRecord> = all.iter().filter(|p| number_of(p) > marker).collect();
    let truncated = after.len() > max;
    after.truncate(max);
    let parts = after
        .iter()
        .map(|p| {
            let o = object_of(p)?;
            Ok(Part {
                part_number: Some(number_of(p) as i32),
                e_tag: Some(ETag::Strong(o.etag.clone())),
                size: Some(i64::try_from(o.content_length).unwrap_or(i64::MAX)),
                last_modified: Some(timestamp(p.mtime)),
                ..Part::default()
            })
        })
        .collect::<S3Result<Vec<_>>>()?;
    let next = after.last().map(|p| number_of(p) as i32);
    let u = &upload.rec;
    let who = owner_el(&u.owner, &u.owner_login);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        upload_id: Some(i.upload_id.clone()),
        part_number_marker: Some(marker as i32),
        next_part_number_marker: next,
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        parts: Some(parts),
        initiator: Some(Initiator {
            id: who.id.clone(),
            display_name: who.display_name.clone(),
        }),
        owner: Some(who),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        ..ListPartsOutput::default()
    }))
}

/// `ListMultipartUploads`: uploads in progress by key, then by start; up to 10 000 are
/// considered per request.
///
/// # Errors
/// `InvalidArgument` for bad parameters; Moray failures.
pub async fn list_uploads(
    api: &S3Api,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    bucket_of(&req, &req.input.bucket)?;
    let i = &req.input;
    let max = match i.max_uploads {
        None => 1000,
        Some(n) if n < 0 => return Err(invalid_argument("max-uploads must be >= 0")),
        Some(n) => n.min(1000) as usize,
    };
    let url = match i.encoding_type.as_ref().map(EncodingType::as_str) {
        None => false,
        Some(v) if v.eq_ignore_ascii_case(EncodingType::URL) => true,
        Some(_) => {
            return Err(invalid_argument(
                "Invalid Encoding Method specified in Request",
            ));
        }
    };
    let enc = |s: String| if url { names::url_encode(&s) } else { s };
    let prefix = i.prefix.clone().unwrap_or_default();
    let delimiter = i.delimiter.as_deref().filter(|d| !d.is_empty());
    let all = api.meta.uploads(&i.bucket, &prefix, 10_000).await?;
    let key_marker = i.key_marker.clone().unwrap_or_default();
    let id_marker = i.upload_id_marker.clone();
    let mut uploads = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut last: Option<(String, Option<String>)> = None;
    let mut passed_id_marker = id_marker.is_none();
    for u in all {
        if !key_marker.is_empty() {
            if u.name < key_marker {
                continue;
            }
            if u.name == key_marker {
                if passed_id_marker {
                    continue;
                }
                if Some(&u.upload_id) == id_marker.as_ref() {
                    passed_id_marker = true;
                }
                continue;
            }
        }
        let cp = rollup(&u.name, &prefix, delimiter).map(str::to_owned);
        if let Some(cp) = &cp
            && prefixes.last() == Some(cp)
        {
            continue;
        }
        if uploads.len() + prefixes.len() == max {
            truncated = true;
            break;
        }
        match cp {
            Some(cp) => {
                last = Some((cp.clone(), None));
                prefixes.push(cp);
            }
            None => {
                last = Some((u.name.clone(), Some(u.upload_id.clone())));
                let who = owner_el(&u.owner, &u.owner_login);
                uploads.push(MultipartUpload {
                    initiated: Some(timestamp(u.initiated)),
                    initiator: Some(Initiator {
                        id: who.id.clone(),
                        display_name: who.display_name.clone(),
                    }),
                    key: Some(enc(u.name)),
                    owner: Some(who),
                    storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                    upload_id: Some(u.upload_id),
                    ..MultipartUpload::default()
                });
            }
        }
    }
    let (next_key, next_id) = match last.filter(|_| truncated) {
        Some((k, id)) => (Some(enc(k)), id),
        None => (None, None),
    };
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket.clone()),
        common_prefixes: Some(
            prefixes
                .into_iter()
                .map(|p| CommonPrefix {
                    prefix: Some(enc(p)),
                })
                .collect(),
        ),
        delimiter: i.delimiter.clone().map(enc),
        encoding_type: i.encoding_type.clone(),
        is_truncated: Some(truncated),
        key_marker: Some(enc(key_marker)),
        max_uploads: Some(max as i32),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        prefix: Some(enc(prefix)),
        upload_id_marker: i.upload_id_marker.clone(),
        uploads: Some(uploads),
        ..ListMultipartUploadsOutput::default()
    }))
}

/// S3's ETag of a multipart object: hex MD5 of the concatenated binary MD5s of the parts,
/// then `-` and the part count.
pub fn composite_etag(part_md5s_b64: &[&str]) -> String {
    use base64::Engine as _;
    let mut h = md5::Md5::new();
    for m in part_md5s_b64 {
        if let Ok(d) = base64::engine::general_purpose::STANDARD.decode(m) {
            h.update(d);
        }
    }
    format!(
        "{}-{}",
        super::objects::hex(&h.finalize()),
        part_md5s_b64.len()
    )
}

/// What a completion has decided before any node works.
struct Plan {
    upload: Versioned<UploadRecord>,
    bucket: BucketRecord,
    key: String,
    cond: WriteCondition,
    object_id: ObjectId,
    /// Object ids of the non-empty parts, in order.
    ids: Vec<String>,
    total: u64,
    /// Every listed part's size, in order (empty parts too: they keep their numbers).
    sizes: PartSizes,
    etag: String,
}

/// `CompleteMultipartUpload`.
///
/// # Errors
/// `MalformedXML` (no parts), `InvalidPartOrder`, `InvalidPart`, `EntityTooSmall`,
/// `NoSuchUpload`, `PreconditionFailed`, `ServiceUnavailable` when a node cannot join.
pub async fn complete(
    api: &S3Api,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    let owner = b.rec.owner.clone();
    let i = req.input;
    names::check_key(&i.key)?;
    let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    if listed.is_empty() {
        return Err(s3err(
            S3ErrorCode::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema: it names no parts",
        ));
    }
    let mut prev = 0u32;
    let mut wanted = Vec::with_capacity(listed.len());
    for p in &listed {
        let n = names::check_part_number(p.part_number.unwrap_or(0))?;
        if n <= prev {
            return Err(s3err(
                S3ErrorCode::InvalidPartOrder,
                "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
            ));
        }
        prev = n;
        wanted.push((n, p.e_tag.as_ref().map(|e| e.value().to_owned())));
    }
    let upload = load(api, &i.bucket, &i.key, &i.upload_id).await?;
    let stored: BTreeMap<u32, MetadataRecord> = api
        .meta
        .parts(&i.bucket, &i.upload_id)
        .await?
        .into_iter()
        .map(|r| (number_of(&r), r))
        .collect();
    let invalid_part = |n: u32| {
        s3err(
            S3ErrorCode::InvalidPart,
            format!(
                "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag: part {n}"
            ),
        )
    };
    // Every part must exist with its ETag before sizes are looked at (as S3 reports).
    let mut chosen: Vec<&ObjectInfo> = Vec::with_capacity(wanted.len());
    for (n, etag) in &wanted {
        let o = stored
            .get(n)
            .and_then(MetadataRecord::object)
            .ok_or_else(|| invalid_part(*n))?;
        if etag
            .as_deref()
            .is_some_and(|e| e.trim_matches('"') != o.etag)
        {
            return Err(invalid_part(*n));
        }
        chosen.push(o);
    }
    for (idx, ((n, _), o)) in wanted.iter().zip(&chosen).enumerate() {
        if idx + 1 < wanted.len() && o.content_length < MIN_PART_SIZE {
            return Err(s3err(
                S3ErrorCode::EntityTooSmall,
                format!(
                    "Your proposed upload is smaller than the minimum allowed object size: part {n} has {} bytes, parts but the last need {MIN_PART_SIZE}",
                    o.content_length
                ),
            ));
        }
    }
    let cond = object_write_condition!(api, &owner, i).await?;
    let md5s: Vec<&str> = chosen.iter().map(|o| o.content_md5.as_str()).collect();
    let plan = Plan {
        etag: composite_etag(&md5s),
        ids: chosen
            .iter()
            .filter(|o| o.content_length > 0)
            .map(|o| o.object_id.to_string())
            .collect(),
        total: chosen.iter().map(|o| o.content_length).sum(),
        sizes: PartSizes::of(chosen.iter().map(|o| o.content_length)),
        upload,
        bucket: b.rec,
        key: i.key,
        cond,
        object_id: ObjectId::random(),
    };
    if plan.total > KEEPALIVE_ABOVE {
        // Answer 200 now and keep the connection alive while the nodes join.
        let api = api.clone();
        let id = manta_util::http::current_request_id().unwrap_or_default();
        let fut = manta_util::http::with_request_id(id, async move { finish(&api, plan).await });
        return Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(fut)),
            ..CompleteMultipartUploadOutput::default()
        }));
    }
    Ok(S3Response::new(finish(api, plan).await?))
}

/// Joins the parts on the nodes and commits the object.
async fn finish(api: &S3Api, plan: Plan) -> S3Result<CompleteMultipartUploadOutput> {
    let u = &plan.upload.rec;
    let joined = if plan.ids.is_empty() {
        Uncommitted::adopt(
            &api.fd,
            &u.owner,
            plan.object_id,
            Vec::new(),
            Stored::empty(),
        )
    } else {
        let joined = data::join_on(&api.fd, &u.sharks, &u.owner, plan.object_id, &plan.ids)
            .await
            .map_err(from_manta)?;
        let size = joined.stored().size;
        if size != plan.total {
            joined.abort().await;
            return Err(internal(format!(
                "joined {size} bytes, expected {}",
                plan.total
            )));
        }
        joined
    };
    let meta = ObjectMeta {
        etag: plan.etag.clone(),
        content_type: u.content_type.clone(),
        headers: u.headers.clone(),
    };
    let mut rec = joined.record(place(&plan.bucket.name, &plan.key), meta);
    if let EntryKind::Object(o) = &mut rec.kind {
        o.parts = Some(plan.sizes.clone());
    }
    let ending = Meta::end_upload_ops(&plan.upload)?;
    joined
        .commit(async {
            let b = &plan.bucket;
            match commit_record(api, b, &mut rec, &plan.cond, &ending).await? {
                Ok(()) => Ok(()),
                // The upload was completed or aborted by another request.
                Err(_) => Err(no_such_upload(&u.upload_id)),
            }
        })
        .await?;
    tracing::info!(
        bucket = %plan.bucket.name,
        key = %plan.key,
        parts = plan.ids.len(),
        size = plan.total,
        "multipart upload completed"
    );
    Ok(CompleteMultipartUploadOutput {
        bucket: Some(plan.bucket.name.clone()),
        key: Some(plan.key.clone()),
        e_tag: Some(ETag::Strong(plan.etag)),
        location: Some(format!("/{}/{}", plan.bucket.name, plan.key)),
        version_id: super::objects::answered_version(&plan.bucket, &rec),
        ..CompleteMultipartUploadOutput::default()
    })
}

/// `AbortMultipartUpload`: the upload and its part records go in one transaction (the parts'
/// files are logged for GC).
///
/// # Errors
/// `NoSuchUpload`.
pub async fn abort(
    api: &S3Api,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    bucket_of(&req, &req.input.bucket)?;
    let i = &req.input;
    let upload = load(api, &i.bucket, &i.key, &i.upload_id).await?;
    match api.meta.transact(Meta::end_upload_ops(&upload)?).await? {
        Ok(_) => Ok(S3Response::new(AbortMultipartUploadOutput::default())),
        Err(_) => Err(no_such_upload(&i.upload_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_etags_follow_s3() {
        // Two parts whose MD5s are those of "" and "a".
        let empty = "1B2M2Y8AsgTpgAmY7PhCfg==";
        let a = "DMF1ucDxtqgxw5niaXcmYQ==";
        let e = composite_etag(&[empty, a]);
        let mut h = md5::Md5::new();
        h.update(hex_to_bytes("d41d8cd98f00b204e9800998ecf8427e"));
        h.update(hex_to_bytes("0cc175b9c0f1b6a831c399e269772661"));
        assert_eq!(
            e,
            format!("{}-2", super::super::objects::hex(&h.finalize()))
        );
    }

    fn hex_to_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
