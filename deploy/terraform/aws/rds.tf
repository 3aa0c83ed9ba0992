# ------------------------------------------------- optional PostgreSQL store
#
# enable_postgres = true: a Multi-AZ RDS PostgreSQL in the database subnets,
# reachable only from the EKS nodes. Its URL goes into the Kubernetes Secret
# <release>-store (key url), which the chart mounts into the tracker as
# SHOAL_STORE__URL_FILE. The password lives in the Terraform state: use an
# encrypted remote state (backend.tf).

resource "random_password" "postgres" {
  count = var.enable_postgres ? 1 : 0

  length  = 40
  special = false # kept URL-safe: it is embedded in postgres://user:password@host/db
}

resource "aws_security_group" "postgres" {
  count = var.enable_postgres ? 1 : 0

  name_prefix = "${var.name}-postgres-"
  description = "shoal PostgreSQL: reachable from the EKS nodes only"
  vpc_id      = module.vpc.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "postgres_from_nodes" {
  count = var.enable_postgres ? 1 : 0

  security_group_id            = aws_security_group.postgres[0].id
  description                  = "PostgreSQL from the EKS nodes (tracker pods)"
  referenced_security_group_id = module.eks.node_security_group_id
  from_port                    = 5432
  to_port                      = 5432
  ip_protocol                  = "tcp"
}

resource "aws_db_parameter_group" "postgres" {
  count = var.enable_postgres ? 1 : 0

  name_prefix = "${var.name}-postgres${var.postgres_engine_version}-"
  family      = "postgres${var.postgres_engine_version}"
  description = "shoal PostgreSQL: TLS only, slow and DDL statements logged"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  lifecycle {
    create_before_destroy = true
  }
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  count = var.enable_postgres ? 1 : 0

  name_prefix        = "${var.name}-rds-monitoring-"
  description        = "RDS enhanced monitoring of ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  count = var.enable_postgres ? 1 : 0

  role       = aws_iam_role.rds_monitoring[0].name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "postgres" {
  count = var.enable_postgres ? 1 : 0

  identifier     = "${var.name}-tracker"
  engine         = "postgres"
  engine_version = var.postgres_engine_version
  instance_class = var.postgres_instance_class

  db_name  = "shoal"
  username = "shoal"
  password = random_password.postgres[0].result
  port     = 5432

  allocated_storage     = var.postgres_allocated_storage
  max_allocated_storage = var.postgres_allocated_storage * 4
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.shoal.arn

  multi_az               = true
  db_subnet_group_name   = module.vpc.database_subnet_group_name
  vpc_security_group_ids = [aws_security_group.postgres[0].id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.postgres[0].name

  # The tracker authenticates with the password from the store Secret; IAM
  # authentication is on as well for operators (aws rds generate-db-auth-token).
  iam_database_authentication_enabled = true

  backup_retention_period   = var.postgres_backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = var.postgres_deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-tracker-final"
  delete_automated_backups  = false

  auto_minor_version_upgrade = true
  apply_immediately          = false

  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring[0].arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.shoal.arn
  performance_insights_retention_period = 7

  depends_on = [aws_iam_role_policy_attachment.rds_monitoring]
}

locals {
  postgres_url = var.enable_postgres ? format(
    "postgres://%s:%s@%s:%d/%s?sslmode=require",
    aws_db_instance.postgres[0].username,
    random_password.postgres[0].result,
    aws_db_instance.postgres[0].address,
    aws_db_instance.postgres[0].port,
    aws_db_instance.postgres[0].db_name,
  ) : ""
}
