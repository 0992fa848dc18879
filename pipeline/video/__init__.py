from .io import VIDEO_EXTENSIONS, Frame, VideoInfo, VideoReader, VideoWriter, is_video_file  # noqa: F401
