"""Payments: WeChat Pay API v3 (JSAPI / mini-program), a local sandbox provider, provider
notifications, reconciliation and refunds.

Public service API (``siyu.payments.service``): ``start_payment``, ``apply_transaction``,
``complete_sandbox_payment``, ``handle_notification``, ``reconcile``, ``request_refund``,
``submit_refund``, ``apply_refund_result``, ``get_payment``, ``get_refund``.
"""
