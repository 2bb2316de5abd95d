"""Referral (老带新) and distribution (分销): invites, rewards, distributors, commissions, withdrawals."""
