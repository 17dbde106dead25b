"""Text around the visual tokens: conversation templates, prompt builders and subtitles per frame."""
