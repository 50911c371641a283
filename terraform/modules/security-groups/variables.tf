variable "name" {
  type        = string
  description = "Name prefix for the security groups (e.g. todo-production)."
}

variable "vpc_id" {
  type        = string
  description = "VPC the security groups belong to."
}

variable "vpc_cidr_block" {
  type        = string
  description = "CIDR of the VPC: the only destination allowed for DNS and in-cluster service traffic (NATS, OTLP)."
}

variable "alb_ingress_cidrs" {
  type        = list(string)
  description = "Client CIDRs allowed to reach the load balancer on HTTPS 443 (0.0.0.0/0 for a public API)."
  default     = ["0.0.0.0/0"]
}

variable "alb_http_redirect" {
  type        = bool
  description = "Also open port 80 on the ALB, whose listener only answers with a redirect to HTTPS (Ingress alb.ingress.kubernetes.io/ssl-redirect)."
  default     = true
}

variable "api_port" {
  type        = number
  description = "Container port of the todo API (HTTP_ADDR)."
  default     = 8080
}

variable "admin_port" {
  type        = number
  description = "Container port of the admin listener (ADMIN_ADDR: /livez, /readyz, /metrics); the load balancer health-checks /readyz on it."
  default     = 9000
}

variable "db_port" {
  type        = number
  description = "PostgreSQL port."
  default     = 5432
}

variable "in_cluster_ports" {
  type        = list(number)
  description = "TCP ports of in-cluster dependencies the pods call inside the VPC (NATS 4222, the OpenTelemetry collector's OTLP/HTTP receiver 4318)."
  default     = [4222, 4318]
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every security group."
  default     = {}
}

variable "nodes_extra_tags" {
  type        = map(string)
  description = "Extra tags of the nodes' security group, e.g. karpenter.sh/discovery = <cluster> so Karpenter's nodes get it too."
  default     = {}
}
