"""Deployment files (Dockerfile, docker-compose.yml, deploy/k8s) and the helpers that check them."""
