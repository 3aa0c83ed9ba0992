# ------------------------------------------------------------ KMS and ECR

# One customer-managed key for the images, the database (storage and
# Performance Insights) and the catalogue backups, rotated yearly.
resource "aws_kms_key" "shoal" {
  description             = "shoal ${var.name}: ECR images, RDS storage and catalogue backups"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "shoal" {
  name          = "alias/${var.name}-shoal"
  target_key_id = aws_kms_key.shoal.key_id
}

# The default key policy, written out: the account's IAM policies decide who
# may use the key; ECR and RDS use it through grants made on their behalf.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A key policy's "*" resource means this key only; delegating to the account's IAM policies is the AWS default key policy.
  #checkov:skip=CKV_AWS_111:Same: key policies cannot name other resources; access is constrained by the account principal and IAM.
  #checkov:skip=CKV_AWS_356:Same: in a key policy "*" is the key itself.
  statement {
    sid       = "EnableIamPolicies"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_ecr_repository" "shoal" {
  for_each = local.services

  name                 = "${var.name}/shoal-${each.key}"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.ecr_force_delete

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.shoal.arn
  }
}

resource "aws_ecr_lifecycle_policy" "shoal" {
  for_each   = aws_ecr_repository.shoal
  repository = each.value.name

  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Drop untagged images after 7 days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 7
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the newest ${var.ecr_keep_images} tagged images"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.ecr_keep_images
        }
        action = { type = "expire" }
      },
    ]
  })
}
