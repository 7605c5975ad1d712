# Least privilege for the platform: list, read and write under raw_prefix of the lake bucket, nothing
# else (no bucket-level listing outside the prefix, no deletes unless allow_raw_delete, no other bucket).
# The platform's S3 calls are put_object, get_object and list_objects_v2 with a Prefix under raw/
# (trading_platform/storage/object_store.py); multipart aborts keep failed large uploads tidy.

locals {
  raw_objects_arn = "${aws_s3_bucket.lake.arn}/${var.raw_prefix}*"
}

data "aws_iam_policy_document" "platform" {
  statement {
    sid       = "ListRawPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.raw_prefix, "${var.raw_prefix}*"]
    }
  }

  statement {
    sid = "ReadWriteRawObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:AbortMultipartUpload",
    ]
    resources = [local.raw_objects_arn]
  }

  dynamic "statement" {
    for_each = var.allow_raw_delete ? [1] : []
    content {
      sid       = "DeleteRawObjects"
      actions   = ["s3:DeleteObject"]
      resources = [local.raw_objects_arn]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseLakeKmsKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "platform" {
  name        = "${var.name_prefix}-lake-raw"
  description = "trading_platform: list/get/put under s3://${var.bucket_name}/${var.raw_prefix}"
  policy      = data.aws_iam_policy_document.platform.json
}

# ---- role: assumed by EKS service accounts (IRSA) and/or by trusted principals ----------------------

locals {
  # arn:aws:iam::123456789012:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id> -> the issuer host/path
  irsa_issuer = var.irsa_oidc_provider_arn == null ? null : element(split("oidc-provider/", var.irsa_oidc_provider_arn), 1)
}

data "aws_iam_policy_document" "assume_role" {
  dynamic "statement" {
    for_each = length(var.role_trusted_principal_arns) > 0 ? [1] : []
    content {
      sid     = "TrustedPrincipals"
      actions = ["sts:AssumeRole"]

      principals {
        type        = "AWS"
        identifiers = var.role_trusted_principal_arns
      }
    }
  }

  dynamic "statement" {
    for_each = local.irsa_issuer == null ? [] : [local.irsa_issuer]
    content {
      sid     = "KubernetesServiceAccounts"
      actions = ["sts:AssumeRoleWithWebIdentity"]

      principals {
        type        = "Federated"
        identifiers = [var.irsa_oidc_provider_arn]
      }

      condition {
        test     = "StringEquals"
        variable = "${statement.value}:aud"
        values   = ["sts.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "${statement.value}:sub"
        values   = [for sa in var.irsa_service_accounts : "system:serviceaccount:${sa}"]
      }
    }
  }
}

resource "aws_iam_role" "platform" {
  count = var.create_role ? 1 : 0

  name               = "${var.name_prefix}-lake"
  description        = "trading_platform runs and code servers: access to the lake's raw prefix"
  assume_role_policy = data.aws_iam_policy_document.assume_role.json

  lifecycle {
    precondition {
      condition     = length(var.role_trusted_principal_arns) > 0 || var.irsa_oidc_provider_arn != null
      error_message = "create_role needs someone to trust: set irsa_oidc_provider_arn and/or role_trusted_principal_arns, or set create_role = false."
    }
  }
}

resource "aws_iam_role_policy_attachment" "platform" {
  count = var.create_role ? 1 : 0

  role       = aws_iam_role.platform[0].name
  policy_arn = aws_iam_policy.platform.arn
}

# ---- user: for a platform host outside AWS ----------------------------------------------------------

resource "aws_iam_user" "platform" {
  count = var.create_user ? 1 : 0

  name = "${var.name_prefix}-lake"
}

resource "aws_iam_user_policy_attachment" "platform" {
  count = var.create_user ? 1 : 0

  user       = aws_iam_user.platform[0].name
  policy_arn = aws_iam_policy.platform.arn
}
