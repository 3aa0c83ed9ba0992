# Remote state (optional, recommended for teams): uncomment, fill in, then run
#   terraform -chdir=deploy/terraform/aws init -migrate-state
# The bucket must exist already (versioning on, default encryption on); S3
# native locking (use_lockfile) needs no DynamoDB table. The state holds the
# generated PostgreSQL password, so restrict who can read the bucket.
# Without this block the state is local (deploy/terraform/aws/terraform.tfstate, gitignored).
#
# terraform {
#   backend "s3" {
#     bucket       = "my-company-terraform-state"
#     key          = "shoal/prod/terraform.tfstate"
#     region       = "eu-west-1"
#     encrypt      = true
#     use_lockfile = true
#     # kms_key_id = "arn:aws:kms:eu-west-1:123456789012:key/..."
#   }
# }
