# Files in the meter's folder: LittleFS on a board, a folder per meter on a host. Both hardware
# layers inherit these; only how a write reaches the medium differs (``_sync``).
import os


class Files:
    base = ""

    def path(self, name):
        return (self.base + "/" + name) if self.base else name

    def read(self, name):
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def _sync(self, f):
        pass  # LittleFS commits on close, and its rename is atomic

    def write_atomic(self, name, data):
        """Replace ``name`` with ``data`` all or nothing: a crash leaves the old or the new file,
        never a torn one (write a temporary file, sync it, rename it over the old name)."""
        final = self.path(name)
        tmp = final + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            self._sync(f)
        os.rename(tmp, final)

    def remove(self, name):
        try:
            os.remove(self.path(name))
        except OSError:
            pass

    def listdir(self, name):
        try:
            return os.listdir(self.path(name))
        except OSError:
            return []

    def mkdir(self, name):
        try:
            os.mkdir(self.path(name))
        except OSError:
            pass
