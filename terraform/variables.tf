variable "name" {
  type        = string
  description = "Prefix of every resource name (lower-case letters and digits, 3-12 characters)."
  default     = "kiln"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.name))
    error_message = "name: 3-12 lower-case letters and digits, starting with a letter (it is part of the storage account and registry names)."
  }
}

variable "location" {
  type        = string
  description = "Azure region, e.g. westeurope."
  default     = "westeurope"
}

variable "kubernetes_version" {
  type        = string
  description = "AKS Kubernetes version (the manifests in deploy/ are validated against 1.33)."
  default     = "1.33"
  validation {
    condition     = can(regex("^1\\.[0-9]+(\\.[0-9]+)?$", var.kubernetes_version))
    error_message = "kubernetes_version: a version such as 1.33 or 1.33.2."
  }
}

variable "system_vm_size" {
  type        = string
  description = "VM size of the system pool (scheduler, job service)."
  default     = "Standard_D4s_v5"
}

variable "executor_vm_size" {
  type        = string
  description = "VM size of the executor pool (one 4-vcore executor pod per 4 cores)."
  default     = "Standard_D16s_v5"
}

variable "executor_min_nodes" {
  type        = number
  description = "Executor pool lower bound (autoscaler)."
  default     = 1
  validation {
    condition     = var.executor_min_nodes >= 0 && floor(var.executor_min_nodes) == var.executor_min_nodes
    error_message = "executor_min_nodes: a whole number, 0 or more."
  }
}

variable "executor_max_nodes" {
  type        = number
  description = "Executor pool upper bound (autoscaler); the thesis used 5 nodes."
  default     = 5
  validation {
    condition     = var.executor_max_nodes >= 1 && var.executor_max_nodes <= 100 && floor(var.executor_max_nodes) == var.executor_max_nodes
    error_message = "executor_max_nodes: a whole number from 1 to 100."
  }
}

variable "lake_filesystem" {
  type        = string
  description = "ADLS Gen2 file system (container) of the lake."
  default     = "lake"
  validation {
    condition     = can(regex("^[a-z0-9](-?[a-z0-9]){2,62}$", var.lake_filesystem))
    error_message = "lake_filesystem: 3-63 lower-case letters, digits and single hyphens."
  }
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of kiln's pods (deploy/namespace.yaml)."
  default     = "kiln"
}

variable "log_retention_days" {
  type        = number
  description = "Days the Log Analytics workspace keeps cluster logs."
  default     = 30
  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days: 30 to 730."
  }
}

variable "api_server_authorized_ip_ranges" {
  type        = list(string)
  description = "CIDR ranges allowed to reach the Kubernetes API (your office, your CI runners)."
  validation {
    condition     = length(var.api_server_authorized_ip_ranges) > 0 && alltrue([for r in var.api_server_authorized_ip_ranges : can(cidrhost(r, 0))])
    error_message = "api_server_authorized_ip_ranges: at least one CIDR range such as 203.0.113.0/24."
  }
}
