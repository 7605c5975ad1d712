output "bucket_name" {
  description = "The lake bucket."
  value       = aws_s3_bucket.lake.id
}

output "bucket_arn" {
  description = "ARN of the lake bucket."
  value       = aws_s3_bucket.lake.arn
}

output "storage_url" {
  description = "Value for TP_STORAGE_URL (leave TP_S3_ENDPOINT_URL unset on AWS)."
  value       = "s3://${aws_s3_bucket.lake.id}/"
}

output "policy_arn" {
  description = "The platform's least-privilege IAM policy."
  value       = aws_iam_policy.platform.arn
}

output "role_arn" {
  description = "Role to assume (IRSA: annotate the service accounts with eks.amazonaws.com/role-arn). null without create_role."
  value       = one(aws_iam_role.platform[*].arn)
}

output "user_name" {
  description = "IAM user carrying the policy. null without create_user."
  value       = one(aws_iam_user.platform[*].name)
}
