/* cli.h — internal: the `ortserve` subcommands and helpers they share. */
#ifndef OSV_CLI_H
#define OSV_CLI_H

#include <stdio.h>

#include "ortserve.h"

/* Subcommands: argv[0] is the subcommand name; return the process exit status. */
int osv_cli_info(int argc, char **argv);
int osv_cli_run(int argc, char **argv);
int osv_cli_serve(int argc, char **argv);
int osv_cli_classify(int argc, char **argv);

/* Creates the ORT environment with default settings (ort_library may be NULL); prints the error. */
int osv_cli_env(const char *ort_library, osv_env_t **env);

/* Loads a model from a .onnx file or a model directory (<dir>/model.onnx or the highest
 * <dir>/<version>/model.onnx, with <dir>/config.json applied). Prints the error. */
int osv_cli_load(osv_env_t *env, const char *path, osv_model_t **out);

/* Prints "tensor(FP32) [-1 N,3,224,224]"-style descriptions. */
void osv_cli_print_dims(FILE *f, const osv_tensor_info_t *t);

#endif
