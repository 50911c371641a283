# Least-privilege security groups for one environment. Traffic allowed, and nothing else:
#
#   clients ──443 (80: redirect only)──► alb ──8080 (API), 9000 (health /readyz)──► pods ──5432──► rds
#   cluster (EKS control plane ENIs) ◄──443── nodes;  cluster ──443/10250/webhooks──► nodes
#   nodes ◄──►nodes (pod-to-pod and node-to-node, required by the VPC CNI and CoreDNS)
#
# `pods` is attached to the todo-service pods through a SecurityGroupPolicy (security
# groups for pods, VPC CNI ENABLE_POD_ENI=true), so only those pods can reach RDS.
# Every rule is a separate resource with a description, so a diff names the exact rule.

locals {
  # Control plane → node ports: kubelet, and the webhook/extension API servers that run
  # on nodes (AWS Load Balancer Controller 9443, metrics-server 4443 or 10251 as the EKS
  # add-on, prometheus-adapter 6443, External Secrets and Prometheus Operator webhooks on
  # 10250, 443).
  cluster_to_node_ports = {
    kubelet        = { port = 10250, description = "EKS control plane to kubelet (logs, exec, metrics)" }
    webhooks_443   = { port = 443, description = "EKS control plane to admission webhooks served on 443" }
    lb_controller  = { port = 9443, description = "EKS control plane to AWS Load Balancer Controller webhook" }
    metrics_server = { port = 4443, description = "EKS control plane to metrics-server (aggregated API)" }
    # The EKS add-on of metrics-server listens on 10251 instead of the chart's 4443/10250.
    metrics_server_addon = { port = 10251, description = "EKS control plane to the metrics-server EKS add-on (aggregated API)" }
    prometheus_adapter   = { port = 6443, description = "EKS control plane to prometheus-adapter (custom.metrics.k8s.io)" }
  }
  dns_protocols = ["tcp", "udp"]
}

resource "aws_security_group" "alb" {
  #checkov:skip=CKV2_AWS_5:Attached outside Terraform: the AWS Load Balancer Controller puts it on the ALB through the Ingress annotation alb.ingress.kubernetes.io/security-groups.
  name        = "${var.name}-alb"
  description = "Application load balancer in front of todo-service: HTTPS from clients, forwards to pods only"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "pods" {
  #checkov:skip=CKV2_AWS_5:Attached outside Terraform: the VPC CNI puts it on todo-service pods through a SecurityGroupPolicy (security groups for pods).
  name        = "${var.name}-todo-pods"
  description = "todo-service pods (security groups for pods): API and health from the ALB, PostgreSQL out"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-todo-pods" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "rds" {
  #checkov:skip=CKV2_AWS_5:Attached in another module: modules/stack passes it to module rds (vpc_security_group_ids); checkov does not follow module outputs.
  name        = "${var.name}-rds"
  description = "PostgreSQL: 5432 from the todo-service pods only; no egress"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-rds" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "cluster" {
  #checkov:skip=CKV2_AWS_5:Attached in another module: modules/stack passes it to module eks (vpc_config.security_group_ids); checkov does not follow module outputs.
  name        = "${var.name}-eks-cluster"
  description = "Additional security group of the EKS control plane ENIs"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-eks-cluster" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "nodes" {
  #checkov:skip=CKV2_AWS_5:Attached in another module: modules/stack passes it to module eks (node launch template); checkov does not follow module outputs.
  name        = "${var.name}-eks-nodes"
  description = "EKS managed node group: what kubelet, the VPC CNI and system pods need"
  vpc_id      = var.vpc_id

  # karpenter.sh/discovery: Karpenter's EC2NodeClass gives its nodes this group too.
  tags = merge(var.tags, var.nodes_extra_tags, { Name = "${var.name}-eks-nodes" })

  lifecycle {
    create_before_destroy = true
  }
}

# --- ALB ---------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.alb_ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients (${each.value})"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_http_redirect" {
  #checkov:skip=CKV_AWS_260:Port 80 only serves the ALB's redirect to HTTPS (Ingress ssl-redirect); no request reaches the pods over plain HTTP.
  for_each = var.alb_http_redirect ? toset(var.alb_ingress_cidrs) : toset([])

  security_group_id = aws_security_group.alb.id
  description       = "HTTP from clients (${each.value}), answered with a redirect to HTTPS"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_pods_api" {
  security_group_id            = aws_security_group.alb.id
  description                  = "ALB to todo-service API port"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.pods.id
}

resource "aws_vpc_security_group_egress_rule" "alb_to_pods_health" {
  security_group_id            = aws_security_group.alb.id
  description                  = "ALB health checks to todo-service admin port (/readyz)"
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
  referenced_security_group_id = aws_security_group.pods.id
}

# --- Pods --------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "pods_api_from_alb" {
  security_group_id            = aws_security_group.pods.id
  description                  = "todo API from the ALB"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "pods_health_from_alb" {
  security_group_id            = aws_security_group.pods.id
  description                  = "ALB health checks on the admin port (/readyz)"
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "pods_admin_from_nodes" {
  security_group_id            = aws_security_group.pods.id
  description                  = "kubelet probes (/livez, /readyz) and Prometheus scrapes (/metrics) from nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "pods_to_rds" {
  security_group_id            = aws_security_group.pods.id
  description                  = "todo-service to PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = var.db_port
  to_port                      = var.db_port
  referenced_security_group_id = aws_security_group.rds.id
}

resource "aws_vpc_security_group_egress_rule" "pods_dns" {
  for_each = toset(local.dns_protocols)

  security_group_id = aws_security_group.pods.id
  description       = "DNS (${each.value}) to CoreDNS and the VPC resolver"
  ip_protocol       = each.value
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = var.vpc_cidr_block
}

resource "aws_vpc_security_group_egress_rule" "pods_in_cluster" {
  for_each = toset([for p in var.in_cluster_ports : tostring(p)])

  security_group_id = aws_security_group.pods.id
  description       = "In-cluster dependency on TCP ${each.value} (NATS, OTLP collector)"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = var.vpc_cidr_block
}

resource "aws_vpc_security_group_egress_rule" "pods_aws_apis" {
  security_group_id = aws_security_group.pods.id
  description       = "HTTPS to AWS APIs (STS for IRSA, Secrets Manager) through the NAT gateways"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# --- RDS ---------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "rds_from_pods" {
  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from todo-service pods only"
  ip_protocol                  = "tcp"
  from_port                    = var.db_port
  to_port                      = var.db_port
  referenced_security_group_id = aws_security_group.pods.id
}

# --- EKS control plane -------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "cluster_api_from_nodes" {
  security_group_id            = aws_security_group.cluster.id
  description                  = "Kubernetes API from kubelet and in-cluster clients on nodes"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_ingress_rule" "cluster_api_from_pods" {
  security_group_id            = aws_security_group.cluster.id
  description                  = "Kubernetes API from pods using security groups for pods"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.pods.id
}

resource "aws_vpc_security_group_egress_rule" "cluster_to_nodes" {
  for_each = local.cluster_to_node_ports

  security_group_id            = aws_security_group.cluster.id
  description                  = each.value.description
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.nodes.id
}

# --- EKS nodes ---------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "nodes_from_cluster" {
  for_each = local.cluster_to_node_ports

  security_group_id            = aws_security_group.nodes.id
  description                  = each.value.description
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.cluster.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_from_nodes" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "Node-to-node and pod-to-pod traffic (VPC CNI, CoreDNS, NATS, Prometheus)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_from_pods" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "todo-service pods to in-cluster services on nodes (CoreDNS, NATS, OTLP collector)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.pods.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_to_nodes" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "Node-to-node and pod-to-pod traffic (VPC CNI, CoreDNS, NATS, Prometheus)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_to_pods_admin" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "kubelet probes and Prometheus scrapes to the todo-service admin port"
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
  referenced_security_group_id = aws_security_group.pods.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_to_cluster" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "kubelet and system pods to the Kubernetes API"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.cluster.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_https" {
  security_group_id = aws_security_group.nodes.id
  description       = "HTTPS to ECR, S3 image layers, EKS and STS APIs through the NAT gateways"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "nodes_dns" {
  for_each = toset(local.dns_protocols)

  security_group_id = aws_security_group.nodes.id
  description       = "DNS (${each.value}) to the VPC resolver"
  ip_protocol       = each.value
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = var.vpc_cidr_block
}
