variable "aws_region" {
  description = "AWS region of the lake bucket (and of the platform, to avoid cross-region transfer)."
  type        = string
}

variable "bucket_name" {
  description = "Name of the S3 bucket holding the Parquet lake. S3 names are global: pick a unique one."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 characters of lowercase letters, digits, dots and hyphens."
  }
}

variable "name_prefix" {
  description = "Prefix for the IAM policy, role and user names."
  type        = string
  default     = "trading-platform"
}

variable "raw_prefix" {
  description = <<-EOT
    Key prefix the platform reads and writes: the lake layout is raw/{dataset}/exchange=.../...
    If TP_STORAGE_URL carries a path (s3://bucket/prod/), include it here ("prod/raw/").
  EOT
  type        = string
  default     = "raw/"

  validation {
    condition     = can(regex("^([^/]+/)+$", var.raw_prefix))
    error_message = "raw_prefix must be one or more path segments ending in '/', e.g. \"raw/\"."
  }
}

variable "raw_ia_transition_days" {
  description = "Days after which raw objects move to STANDARD_IA (S3 requires at least 30)."
  type        = number
  default     = 30

  validation {
    condition     = var.raw_ia_transition_days >= 30
    error_message = "S3 only transitions objects to STANDARD_IA after at least 30 days."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a replaced or deleted object version is kept (versioning is on) before it is removed."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for SSE-KMS. null: SSE-S3 (AES256, no key to manage)."
  type        = string
  default     = null
}

variable "allow_raw_delete" {
  description = <<-EOT
    Also grant s3:DeleteObject under raw_prefix. Off by default (least privilege: list/get/put).
    Turn it on when the daily compaction of small files runs, since it removes the files it merged.
  EOT
  type        = bool
  default     = false
}

variable "create_role" {
  description = "Create an IAM role carrying the platform policy (for EKS IRSA and/or trusted principals)."
  type        = bool
  default     = true
}

variable "role_trusted_principal_arns" {
  description = "IAM principals (roles/users/accounts) allowed to assume the role with sts:AssumeRole."
  type        = list(string)
  default     = []
}

variable "irsa_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider, to let Kubernetes service accounts assume the role (IRSA)."
  type        = string
  default     = null
}

variable "irsa_service_accounts" {
  description = <<-EOT
    Service accounts ("namespace:name") allowed to assume the role through IRSA. With the Dagster Helm
    chart, runs (K8sRunLauncher Jobs) use the chart's service account and the code server uses the
    dagster-user-deployments one; list both if both touch S3.
  EOT
  type        = list(string)
  default     = ["dagster:dagster"]
}

variable "create_user" {
  description = <<-EOT
    Create an IAM user with the platform policy, for hosts outside AWS. No access key is created here
    (it would sit in the Terraform state): create one with `aws iam create-access-key` when needed.
  EOT
  type        = bool
  default     = false
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a non-empty bucket. Keep false for the real lake."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default = {
    project = "trading-platform"
  }
}
