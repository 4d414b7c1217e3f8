# kiln scheduler (one replica, Service kiln-scheduler:50050) and executors
# (one per executor node). Clients submit with
#   kiln submit --master df://kiln-scheduler:50050 CONFIG.yaml
# The lake credentials come from the secret "kiln-lake" (AZURE_STORAGE_*),
# never from configs.
provider "kubernetes" {
  host                   = azurerm_kubernetes_cluster.kiln.kube_config[0].host
  client_certificate     = base64decode(azurerm_kubernetes_cluster.kiln.kube_config[0].client_certificate)
  client_key             = base64decode(azurerm_kubernetes_cluster.kiln.kube_config[0].client_key)
  cluster_ca_certificate = base64decode(azurerm_kubernetes_cluster.kiln.kube_config[0].cluster_ca_certificate)
}

resource "kubernetes_deployment" "scheduler" {
  metadata { name = "kiln-scheduler" }
  spec {
    replicas = 1
    selector { match_labels = { app = "kiln-scheduler" } }
    template {
      metadata { labels = { app = "kiln-scheduler" } }
      spec {
        container {
          name  = "scheduler"
          image = var.image
          args  = ["scheduler", "--bind-host", "0.0.0.0", "--bind-port", "50050", "--external-host", "kiln-scheduler"]
          port { container_port = 50050 }
          env_from {
            secret_ref { name = "kiln-lake" }
          }
        }
      }
    }
  }
}

resource "kubernetes_service" "scheduler" {
  metadata { name = "kiln-scheduler" }
  spec {
    selector = { app = "kiln-scheduler" }
    port {
      port        = 50050
      target_port = 50050
    }
  }
}

resource "kubernetes_daemonset" "executor" {
  metadata { name = "kiln-executor" }
  spec {
    selector { match_labels = { app = "kiln-executor" } }
    template {
      metadata { labels = { app = "kiln-executor" } }
      spec {
        node_selector = { "kiln/role" = "executor" }
        container {
          name  = "executor"
          image = var.image
          args = ["executor", "--scheduler-host", "kiln-scheduler", "--scheduler-port", "50050",
          "--bind-host", "0.0.0.0", "--external-host", "$(POD_IP)", "--bind-port", "50051", "--grpc-port", "50052", "--work-dir", "/var/lib/kiln/work"]
          env {
            name = "POD_IP"
            value_from {
              field_ref { field_path = "status.podIP" }
            }
          }
          env_from {
            secret_ref { name = "kiln-lake" }
          }
          port { container_port = 50051 }
          port { container_port = 50052 }
        }
      }
    }
  }
}
