# The EKS cluster the service runs on: private API endpoint (public only from listed
# CIDRs), Kubernetes secrets envelope-encrypted with a customer key, every control plane
# log type in an encrypted log group, an OIDC provider for IAM roles for service
# accounts, a managed node group in the private subnets (IMDSv2 only, encrypted disks),
# and the service's own IRSA role, which may read exactly one Secrets Manager secret.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  region      = data.aws_region.current.name
  oidc_issuer = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
  log_types   = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

data "aws_iam_policy_document" "account_administers" {
  #checkov:skip=CKV_AWS_109:KMS key policy, not an IAM policy: Resource "*" means this key only; the account-root statement is the AWS default key policy that delegates access to IAM.
  #checkov:skip=CKV_AWS_111:KMS key policy, not an IAM policy: Resource "*" means this key only; write actions are limited to the account root and the named services.
  #checkov:skip=CKV_AWS_356:KMS key policy, not an IAM policy: in a key policy Resource must be "*" (it means this key).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

# --- KMS ----------------------------------------------------------------------------------

resource "aws_kms_key" "cluster" {
  description             = "${var.name}: EKS Kubernetes secrets envelope encryption"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.account_administers.json

  tags = var.tags
}

resource "aws_kms_alias" "cluster" {
  name          = "alias/${var.name}-eks-secrets"
  target_key_id = aws_kms_key.cluster.key_id
}

# Node volumes are created by the Auto Scaling service-linked role, which must be able to
# use the key (matched by ARN in a condition, so the policy is valid before the role exists).
data "aws_iam_policy_document" "ebs_key" {
  source_policy_documents = [data.aws_iam_policy_document.account_administers.json]

  statement {
    sid = "AutoScalingUsesKeyForNodeVolumes"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:DescribeKey",
      "kms:CreateGrant",
    ]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:PrincipalArn"
      values   = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"]
    }
  }
}

resource "aws_kms_key" "ebs" {
  description             = "${var.name}: EKS node root volumes"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.ebs_key.json

  tags = var.tags
}

resource "aws_kms_alias" "ebs" {
  name          = "alias/${var.name}-eks-ebs"
  target_key_id = aws_kms_key.ebs.key_id
}

resource "aws_kms_key" "service" {
  description             = "${var.name}: todo-service application secret"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.account_administers.json

  tags = var.tags
}

resource "aws_kms_alias" "service" {
  name          = "alias/${var.name}-todo-service-secret"
  target_key_id = aws_kms_key.service.key_id
}

# --- Control plane --------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "cluster" {
  # EKS writes to exactly this name; creating it first sets retention and encryption.
  name              = "/aws/eks/${var.name}/cluster"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn

  tags = var.tags
}

data "aws_iam_policy_document" "cluster_assume" {
  statement {
    sid     = "EksAssume"
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${var.name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.cluster_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  # AmazonEKSVPCResourceController manages the trunk/branch ENIs of security groups for pods.
  for_each = toset(["AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController"])

  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

resource "aws_eks_cluster" "this" {
  name     = var.name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  enabled_cluster_log_types = local.log_types

  vpc_config {
    subnet_ids              = var.private_subnet_ids
    security_group_ids      = [var.cluster_security_group_id]
    endpoint_private_access = true
    endpoint_public_access  = length(var.public_access_cidrs) > 0
    public_access_cidrs     = length(var.public_access_cidrs) > 0 ? var.public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]

    provider {
      key_arn = aws_kms_key.cluster.arn
    }
  }

  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  tags = var.tags

  depends_on = [
    aws_cloudwatch_log_group.cluster,
    aws_iam_role_policy_attachment.cluster,
  ]
}

resource "aws_eks_access_entry" "admins" {
  for_each = toset(var.cluster_admin_role_arns)

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  type          = "STANDARD"

  tags = var.tags
}

resource "aws_eks_access_policy_association" "admins" {
  for_each = toset(var.cluster_admin_role_arns)

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }

  depends_on = [aws_eks_access_entry.admins]
}

# --- IRSA -------------------------------------------------------------------------------------

resource "aws_iam_openid_connect_provider" "this" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]

  tags = var.tags
}

# Trust policy for one ServiceAccount; reused by the VPC CNI and the service roles.
data "aws_iam_policy_document" "irsa_assume" {
  for_each = {
    vpc_cni = "system:serviceaccount:kube-system:aws-node"
    service = "system:serviceaccount:${var.service_namespace}:${var.service_account_name}"
  }

  statement {
    sid     = "ServiceAccountAssume"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = [each.value]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

# The VPC CNI gets its ENI permissions through IRSA instead of the node role, so pods on
# the node cannot use them.
resource "aws_iam_role" "vpc_cni" {
  name               = "${var.name}-vpc-cni"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["vpc_cni"].json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "vpc_cni" {
  role       = aws_iam_role.vpc_cni.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKS_CNI_Policy"
}

resource "aws_eks_addon" "vpc_cni" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "vpc-cni"
  service_account_role_arn    = aws_iam_role.vpc_cni.arn
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"

  # Security groups for pods: the todo-service pods get the pods security group, the
  # only one RDS accepts. enableNetworkPolicy: the network policy agent enforces the
  # NetworkPolicies of k8s/base (without it they are accepted and ignored); "standard"
  # enforcing mode of security groups for pods is what lets both apply to the same pods.
  configuration_values = jsonencode({
    enableNetworkPolicy = "true"
    env = {
      ENABLE_POD_ENI                    = "true"
      POD_SECURITY_GROUP_ENFORCING_MODE = "standard"
    }
  })

  tags = var.tags

  depends_on = [aws_iam_role_policy_attachment.vpc_cni]
}

resource "aws_eks_addon" "kube_proxy" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "kube-proxy"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"

  tags = var.tags
}

resource "aws_eks_addon" "coredns" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "coredns"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"

  tags = var.tags

  # CoreDNS pods need nodes to schedule on.
  depends_on = [aws_eks_node_group.this]
}

# --- Nodes --------------------------------------------------------------------------------------

data "aws_iam_policy_document" "node_assume" {
  statement {
    sid     = "Ec2Assume"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset(["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly"])

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

resource "aws_launch_template" "node" {
  name_prefix            = "${var.name}-node-"
  description            = "${var.name}: EKS managed nodes (IMDSv2 only, encrypted root volume)"
  update_default_version = true
  vpc_security_group_ids = [var.node_security_group_id]

  # Hop limit 1: pods cannot reach the node's instance metadata (and its role); they use
  # IRSA. The AWS Load Balancer Controller must be given --aws-region and --aws-vpc-id.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.node_disk_size_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = aws_kms_key.ebs.arn
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-node" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-node" })
  }

  tags = var.tags
}

resource "aws_eks_node_group" "this" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-default"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.private_subnet_ids
  version         = var.kubernetes_version
  ami_type        = "AL2023_x86_64_STANDARD"
  capacity_type   = "ON_DEMAND"
  instance_types  = var.node_instance_types

  scaling_config {
    min_size     = var.node_min_size
    desired_size = var.node_desired_size
    max_size     = var.node_max_size
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  tags = var.tags

  depends_on = [
    aws_iam_role_policy_attachment.node,
    aws_eks_addon.vpc_cni,
  ]

  lifecycle {
    # The cluster autoscaler owns the node count after creation.
    ignore_changes = [scaling_config[0].desired_size]
  }
}

# --- The service's identity -----------------------------------------------------------------------

# Holds the service's secrets as JSON (DATABASE_URL, ADMIN_TOKEN, JWT_SECRET, ...). The value
# is written by an operator (`aws secretsmanager put-secret-value`), never by Terraform, so it
# is not in the state or in .tfvars.
resource "aws_secretsmanager_secret" "service" {
  #checkov:skip=CKV2_AWS_57:The value holds several app secrets (DATABASE_URL of the app role, ADMIN_TOKEN, JWT_SECRET) rotated by operators with a rolling restart; no Lambda rotator is deployed. The RDS master password is rotated by RDS itself.
  name                    = "${var.name}/todo-service"
  description             = "todo-service runtime secrets (JSON: DATABASE_URL, ADMIN_TOKEN, JWT_SECRET); value set out of band"
  kms_key_id              = aws_kms_key.service.arn
  recovery_window_in_days = 30

  tags = var.tags
}

resource "aws_iam_role" "service" {
  name               = "${var.name}-todo-service"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["service"].json

  tags = var.tags
}

data "aws_iam_policy_document" "service" {
  statement {
    sid       = "ReadOwnSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_secretsmanager_secret.service.arn]
  }

  statement {
    sid       = "DecryptOwnSecret"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.service.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "IamDatabaseLogin"
    actions   = ["rds-db:connect"]
    resources = ["arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${var.db_resource_id}/${var.db_iam_username}"]
  }
}

resource "aws_iam_role_policy" "service" {
  name   = "todo-service-runtime"
  role   = aws_iam_role.service.id
  policy = data.aws_iam_policy_document.service.json
}
