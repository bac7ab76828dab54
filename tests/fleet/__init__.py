"""Tests of the Ansible playbooks (ansible/) against a throwaway target."""
