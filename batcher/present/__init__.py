"""What people see: logs, live progress, the end-of-run table and report.html."""
