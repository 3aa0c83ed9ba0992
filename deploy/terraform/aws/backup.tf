# ------------------------------------------------------- catalogue backups
#
# With the tracker's embedded store (enable_postgres = false) the catalogue lives on
# one EBS volume. The chart's backup CronJob (backup.enabled, destination s3) takes a
# snapshot with `shoal-tracker backup` and uploads it here with the AWS CLI, as the
# ServiceAccount <fullname>-backup through IRSA. The bucket is versioned, encrypted
# with the deployment's KMS key, closed to the public and to plain HTTP; old
# snapshots expire after backup_retention_days. With PostgreSQL, RDS backups
# (postgres_backup_retention_days) cover the catalogue and this bucket is not made.

locals {
  backup_enabled = var.enable_catalogue_backup && !var.enable_postgres
  # The chart's ServiceAccount of the backup job (templates/backup-cronjob.yaml).
  backup_service_account = "${local.fullname}-backup"
  backup_prefix          = "catalogue"
}

resource "aws_s3_bucket" "backup" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second (log) bucket; the only writer is one IRSA role, visible in CloudTrail.
  #checkov:skip=CKV_AWS_144:Cross-region replication is a per-organisation choice (a second region and key); versioning keeps every snapshot.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; failed backups show as failed Jobs.
  count = local.backup_enabled ? 1 : 0

  # At most 37 characters: "<name>-shoal-backup-" is 34 for the longest allowed name.
  bucket_prefix = "${var.name}-shoal-backup-"
  force_destroy = false
}

resource "aws_s3_bucket_versioning" "backup" {
  count  = local.backup_enabled ? 1 : 0
  bucket = aws_s3_bucket.backup[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "backup" {
  count  = local.backup_enabled ? 1 : 0
  bucket = aws_s3_bucket.backup[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.shoal.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "backup" {
  count  = local.backup_enabled ? 1 : 0
  bucket = aws_s3_bucket.backup[0].id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "backup" {
  count  = local.backup_enabled ? 1 : 0
  bucket = aws_s3_bucket.backup[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "backup" {
  count  = local.backup_enabled ? 1 : 0
  bucket = aws_s3_bucket.backup[0].id

  rule {
    id     = "expire-old-snapshots"
    status = "Enabled"

    filter {
      prefix = "${local.backup_prefix}/"
    }

    expiration {
      days = var.backup_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.backup_retention_days
    }
  }

  # A job killed mid-upload leaves parts that cost storage: drop them after a day.
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# TLS only.
data "aws_iam_policy_document" "backup_bucket" {
  count = local.backup_enabled ? 1 : 0

  statement {
    sid       = "DenyPlainHttp"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.backup[0].arn, "${aws_s3_bucket.backup[0].arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "backup" {
  count  = local.backup_enabled ? 1 : 0
  bucket = aws_s3_bucket.backup[0].id
  policy = data.aws_iam_policy_document.backup_bucket[0].json

  depends_on = [aws_s3_bucket_public_access_block.backup]
}

# IRSA: only the backup ServiceAccount of this release may assume the role.
data "aws_iam_policy_document" "backup_assume" {
  count = local.backup_enabled ? 1 : 0

  statement {
    sid     = "BackupServiceAccount"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [module.eks.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_provider}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${local.backup_service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_provider}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "backup" {
  count = local.backup_enabled ? 1 : 0

  name_prefix        = "${var.name}-backup-"
  description        = "shoal ${var.name}: the catalogue backup job writes snapshots to S3"
  assume_role_policy = data.aws_iam_policy_document.backup_assume[0].json
}

# Write snapshots under the prefix; nothing else (no delete, no list: retention is
# the lifecycle rule's, restores are made by a person).
data "aws_iam_policy_document" "backup_write" {
  count = local.backup_enabled ? 1 : 0

  statement {
    sid       = "PutSnapshots"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.backup[0].arn}/${local.backup_prefix}/*"]
  }

  # SSE-KMS uploads (multipart ones read the data key back).
  statement {
    sid       = "EncryptSnapshots"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.shoal.arn]
  }
}

resource "aws_iam_role_policy" "backup" {
  count  = local.backup_enabled ? 1 : 0
  name   = "write-catalogue-snapshots"
  role   = aws_iam_role.backup[0].id
  policy = data.aws_iam_policy_document.backup_write[0].json
}
