/* main.c — the `ortserve` command: dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "opts.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ortserve <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve --model-repository DIR [options]      serve every model over KServe v2 HTTP\n"
            "  info <model.onnx|model dir> [--json]         inputs, outputs and metadata of a model\n"
            "  run <model> --input NAME=FILE.npy ...         run a model once on .npy inputs\n"
            "      [--output-dir DIR]\n"
            "  classify --model-repository DIR -m MODEL IMG...  top-k labels of JPEG/PNG files\n"
            "      [--top-k K] [--json]\n"
            "\n"
            "options:\n"
            "  --version    print ortserve's and ONNX Runtime's versions\n"
            "  --help       this text; `ortserve <command> --help` for a command's options\n"
            "\n"
            "environment:\n"
            "  ORTSERVE_ORT_LIBRARY   path to libonnxruntime.so.1 (default: the installed copy\n"
            "                         <prefix>/lib/ortserve, then the build's ORT, then the loader path)\n");
}

static int version(void)
{
    osv_env_t *env;
    printf("ortserve %s (ONNX Runtime C API %d)\n", osv_version(), osv_env_api_version());
    if (osv_cli_env(NULL, &env) != 0)
        return 1;
    printf("ONNX Runtime %s (%s)\n", osv_env_ort_version(env), osv_env_ort_path(env));
    osv_env_destroy(env);
    return 0;
}

/* One line naming the closest command (or option, for "--verison"), then where the help is. */
static int unknown_command(const char *cmd)
{
    static const char *const names[] = {"serve", "info", "run", "classify", "help", "version"};
    const char *name = cmd + (cmd[0] == '-') + (cmd[0] == '-' && cmd[1] == '-');
    int at = osv_opt_suggest(name, strlen(name), names, sizeof names / sizeof *names);
    fprintf(stderr, "ortserve: unknown %s '%.200s'", cmd[0] == '-' ? "option" : "command", cmd);
    if (at >= 0)
        fprintf(stderr, "; did you mean '%s%s'?", cmd[0] == '-' && at >= 4 ? "--" : "", names[at]);
    fprintf(stderr, "\nRun 'ortserve --help' for the commands.\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)
        return version();
    if (strcmp(argv[1], "info") == 0)
        return osv_cli_info(argc - 1, argv + 1);
    if (strcmp(argv[1], "serve") == 0)
        return osv_cli_serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "run") == 0)
        return osv_cli_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "classify") == 0)
        return osv_cli_classify(argc - 1, argv + 1);
    return unknown_command(argv[1]);
}
