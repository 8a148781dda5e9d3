//! Markdown network documentation generated from a profile (tables, routes, DNS records, firewall rules, Mermaid diagrams).
