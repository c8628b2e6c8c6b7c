//! The display UI, drawn with embedded-graphics into the board's RGB framebuffer.
