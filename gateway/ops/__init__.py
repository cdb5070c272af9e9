"""What operators watch: the status endpoint, systemd notification, InfluxDB export."""
