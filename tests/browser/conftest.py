"""The browser fixtures (chromium, the scripted model) for every browser test module."""

from tests.browser.test_console_browser import browser, model  # noqa: F401 - fixtures shared by modules
