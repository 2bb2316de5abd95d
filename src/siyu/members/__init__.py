"""Members: the merchant's customers — identity (openid / unionid / phone), profile, login."""
