#!/usr/bin/python3
"""test_install.py — `make install` of the build under test into a temporary DESTDIR, then the
installed tree used the way its users use it:

- the layout: binary, libortserve.so with its SONAME and symlinks, libortserve.a, every public
  header, ortserve.pc, the CMake package, ONNX Runtime in <prefix>/lib/ortserve, the man page;
- the installed `ortserve --version`, which must load the installed ONNX Runtime copy (the tree is
  staged under DESTDIR, so this also proves the search is relative, not a configured path);
- a C program built against the installed headers and library with pkg-config, and with CMake's
  find_package(ortserve) (shared and static targets), which prints osv_version() and the version
  of the ONNX Runtime it loaded;
- `man -l` renders ortserve(1) without a warning, and the page names every command, option and
  environment variable the binary's --help texts list.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from deploy_support import (BIN, QUIET_ORT, SRC, BIN_DIR, c_compiler, cmake_cache, cross_built,  # noqa: E402
                            project_version, run, sanitize_flags, serve_options)

PREFIX = "/opt/ortserve"

HELLO_C = r"""
#include <stdio.h>
#include <ortserve.h>

int main(int argc, char **argv)
{
    osv_env_opts_t o;
    osv_env_t *env;
    osv_err_t err;
    osv_env_opts_default(&o);
    if (argc > 1)
        o.ort_library = argv[1];
    printf("ortserve %s\n", osv_version());
    if (osv_env_create(&o, &env, &err) != 0) {
        fprintf(stderr, "osv_env_create: %s\n", err.msg);
        return 1;
    }
    printf("onnxruntime %s\nloaded %s\n", osv_env_ort_version(env), osv_env_ort_path(env));
    osv_env_destroy(env);
    return 0;
}
"""

CMAKE_PROJECT = r"""
cmake_minimum_required(VERSION 3.16)
project(embed C)
find_package(ortserve 0.1 REQUIRED)
add_executable(embed_shared hello.c)
target_link_libraries(embed_shared PRIVATE ortserve::ortserve)
add_executable(embed_static hello.c)
target_link_libraries(embed_static PRIVATE ortserve::ortserve_static)
file(WRITE ${CMAKE_BINARY_DIR}/ort_dir.txt "${ortserve_ORT_LIBRARY_DIR}")
"""


class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="osv-install-")
        cls.stage = os.path.join(cls.tmp, "stage")
        # The Makefile's own target, without rebuilding (-o build: the build is the one under test).
        run(["make", "-s", "-C", SRC, "-o", "build", "install", "BUILD=" + BIN_DIR, "PREFIX=" + PREFIX,
             "DESTDIR=" + cls.stage])
        cls.root = cls.stage + PREFIX

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, rel):
        return os.path.join(self.root, rel)

    def test_layout(self):
        r = self.path
        self.assertTrue(os.access(r("bin/ortserve"), os.X_OK))
        v = project_version()
        self.assertEqual(os.readlink(r("lib/libortserve.so")), "libortserve.so.0")
        self.assertEqual(os.readlink(r("lib/libortserve.so.0")), "libortserve.so.%s" % v)
        dyn = run(["readelf", "-d", r("lib/libortserve.so.%s" % v)]).stdout
        self.assertIn("Library soname: [libortserve.so.0]", dyn)
        self.assertNotRegex(dyn, r"RPATH|RUNPATH")
        self.assertNotRegex(run(["readelf", "-d", r("bin/ortserve")]).stdout, r"RPATH|RUNPATH")
        self.assertTrue(os.path.isfile(r("lib/libortserve.a")))
        headers = sorted(os.path.relpath(p, os.path.join(SRC, "include"))
                         for p in glob.glob(os.path.join(SRC, "include", "**", "*.h"), recursive=True))
        installed = sorted(os.path.relpath(p, r("include"))
                           for p in glob.glob(r("include/**/*.h"), recursive=True))
        self.assertEqual(installed, headers)
        for f in ["lib/pkgconfig/ortserve.pc", "lib/cmake/ortserve/ortserveConfig.cmake",
                  "lib/cmake/ortserve/ortserveConfigVersion.cmake", "lib/cmake/ortserve/ortserveTargets.cmake",
                  "share/man/man1/ortserve.1"]:
            self.assertTrue(os.path.isfile(r(f)), f)
        ort = r("lib/ortserve/libonnxruntime.so.1")
        self.assertTrue(os.path.isfile(ort) and not os.path.islink(ort), "ORT must be a copy, not a link")
        with open(ort, "rb") as f:
            self.assertEqual(f.read(4), b"\x7fELF")
        ort_root = os.path.dirname(os.path.dirname(os.path.realpath(os.path.join(
            SRC, "third_party", "onnxruntime", "lib", "libonnxruntime.so.1"))))
        if os.path.exists(os.path.join(ort_root, "LICENSE")):
            self.assertTrue(os.path.isfile(r("share/doc/ortserve/onnxruntime/LICENSE")))
            self.assertTrue(os.path.isfile(r("share/doc/ortserve/onnxruntime/ThirdPartyNotices.txt")))

    def test_version_uses_installed_ort(self):
        env = {k: v for k, v in os.environ.items() if k != "ORTSERVE_ORT_LIBRARY"}
        env.update(QUIET_ORT)
        p = subprocess.run([self.path("bin/ortserve"), "--version"], capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^ortserve %s \(ONNX Runtime C API \d+\)\n" % re.escape(project_version()))
        m = re.search(r"^ONNX Runtime (1\.\d+\.\d+) \((.*)\)$", p.stdout, re.M)
        self.assertIsNotNone(m, p.stdout)
        self.assertEqual(os.path.realpath(m.group(2)), os.path.realpath(self.path("lib/ortserve/libonnxruntime.so.1")))
        # The build tree's binary says the same versions.
        self.assertEqual(run([BIN, "--version"]).stdout.splitlines()[0], p.stdout.splitlines()[0])

    def check_hello(self, exe, expect_ort=None, args=()):
        env = dict(os.environ, LD_LIBRARY_PATH=self.path("lib"), **QUIET_ORT)
        env.pop("ORTSERVE_ORT_LIBRARY", None)
        p = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("ortserve %s\n" % project_version(), p.stdout)
        self.assertRegex(p.stdout, r"onnxruntime 1\.\d+\.\d+\n")
        if expect_ort:
            loaded = re.search(r"^loaded (.*)$", p.stdout, re.M).group(1)
            self.assertEqual(os.path.realpath(loaded), os.path.realpath(expect_ort))
        return p.stdout

    def test_pkg_config_program(self):
        d = tempfile.mkdtemp(dir=self.tmp)
        with open(os.path.join(d, "hello.c"), "w") as f:
            f.write(HELLO_C)
        env = {"PKG_CONFIG_PATH": self.path("lib/pkgconfig")}
        self.assertEqual(run(["pkg-config", "--modversion", "ortserve"], env=env).stdout.strip(), project_version())
        flags = run(["pkg-config", "--cflags", "--libs", "ortserve"], env=env).stdout.split()
        exe = os.path.join(d, "hello")
        run([c_compiler(), "-std=c17", "-Wall", "-Werror", *sanitize_flags(), "-o", exe, os.path.join(d, "hello.c"),
             *flags])
        if not cross_built():  # the host's ldd cannot read another machine's program
            self.assertIn(os.path.realpath(self.path("lib/libortserve.so.0")),
                          [os.path.realpath(x) for x in re.findall(r"=> (\S+)", run(["ldd", exe], env={
                              "LD_LIBRARY_PATH": self.path("lib")}).stdout)])
        # libortserve.so finds the ONNX Runtime installed beside it, <prefix>/lib/ortserve.
        self.check_hello(exe, self.path("lib/ortserve/libonnxruntime.so.1"))

    def test_cmake_package_program(self):
        d = tempfile.mkdtemp(dir=self.tmp)
        for name, text in (("hello.c", HELLO_C), ("CMakeLists.txt", CMAKE_PROJECT)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        b = os.path.join(d, "build")
        cflags = " ".join(sanitize_flags())
        toolchain = cmake_cache("CMAKE_TOOLCHAIN_FILE")
        run(["cmake", "-S", d, "-B", b, "-G", "Ninja", "-DCMAKE_PREFIX_PATH=" + self.root,
             "-DCMAKE_C_COMPILER=" + c_compiler(), "-DCMAKE_C_FLAGS=" + cflags, "-DCMAKE_EXE_LINKER_FLAGS=" + cflags,
             *(["-DCMAKE_TOOLCHAIN_FILE=" + toolchain] if toolchain else [])])
        run(["cmake", "--build", b])
        with open(os.path.join(b, "ort_dir.txt")) as f:
            ort_dir = f.read()
        self.assertEqual(os.path.realpath(ort_dir), os.path.realpath(self.path("lib/ortserve")))
        ort = os.path.join(ort_dir, "libonnxruntime.so.1")
        self.check_hello(os.path.join(b, "embed_shared"), ort)
        # Statically linked, the program is not beside the ORT copy: it passes the path the package gives.
        self.check_hello(os.path.join(b, "embed_static"), ort, [ort])
        self.assertNotIn("libortserve", run(["readelf", "-d", os.path.join(b, "embed_static")]).stdout)

    def test_man_page_renders_cleanly(self):
        page = self.path("share/man/man1/ortserve.1")
        p = subprocess.run(["man", "--warnings=w", "-l", page], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "", "man reported warnings")
        self.assertRegex(p.stdout, r"ORTSERVE\(1\)")
        p = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stderr), (0, ""))

    def test_man_page_covers_every_command_option_and_variable(self):
        with open(os.path.join(SRC, "docs", "ortserve.1")) as f:
            text = f.read().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fP", "")
        usage = run([BIN, "--help"]).stdout
        commands = re.findall(r"^  ([a-z]+) ", usage.split("commands:")[1].split("options:")[0], re.M)
        self.assertIn("serve", commands)
        for cmd in commands:
            self.assertRegex(text, r"(?m)^\.B %s$" % cmd, "command %s has no entry in ortserve(1)" % cmd)
            help_text = run([BIN, cmd, "--help"]).stdout
            for flag in set(re.findall(r"--[a-z][a-z0-9-]+", help_text)):
                self.assertIn(flag, text, "%s %s is not in ortserve(1)" % (cmd, flag))
        for flag in re.findall(r"--[a-z][a-z0-9-]+", usage.split("options:")[1]):
            self.assertIn(flag, text)
        for var in re.findall(r"ORTSERVE_[A-Z0-9_]+", usage):
            self.assertIn(var, text)
        for opt in serve_options().values():
            self.assertIn("--" + opt.flag, text)
            self.assertIn(opt.env, text, "%s is not in ortserve(1)" % opt.env)


if __name__ == "__main__":
    unittest.main(verbosity=2)
