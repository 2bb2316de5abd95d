"""Test peers for Siyu's integrations (``fake_wechat``), usable in tests and local development."""
