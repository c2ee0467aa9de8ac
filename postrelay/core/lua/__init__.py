"""Every Lua script postrelay runs, one `.lua` file each, loaded once and called one way (`postrelay.core.scripts`)."""
