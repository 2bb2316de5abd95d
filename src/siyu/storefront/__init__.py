"""Storefront: the mini-program home page as data (banners, ad slots, navigation, notices)."""
